"""The dyno manager's back-off, throttle and refill decisions, as pure functions."""

from __future__ import annotations

import pytest

from dynod.manager.memory_policy import R14_EVERY, OomVerdict, oom_verdict, r14_due, r15_usage
from dynod.manager.start_backoff import MAX_WAIT, StartBackoff, backoff_wait
from dynod.manager.warm_pool import to_make

MiB = 1024 * 1024


def test_start_backoff_doubles_from_one_second_up_to_a_minute() -> None:
    assert [backoff_wait(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff_wait(0) == 0 and backoff_wait(10_000) == MAX_WAIT  # never an overflow


def test_a_failing_slot_waits_and_a_success_forgets_it() -> None:
    backoff: StartBackoff[tuple[str, str]] = StartBackoff()
    slot, other = ("app", "web.1"), ("app", "web.2")
    assert not backoff.waiting(slot, 0.0)
    assert backoff.failed(slot, 100.0) == 101.0
    assert backoff.waiting(slot, 100.5) and not backoff.waiting(slot, 101.0)
    assert not backoff.waiting(other, 100.5)  # one slot's failures hold no other back
    assert backoff.failed(slot, 101.0) == 103.0 and backoff.failed(slot, 103.0) == 107.0
    assert backoff.failures(slot) == 3 and backoff.deadlines() == [107.0]
    backoff.succeeded(slot)
    assert backoff.failures(slot) == 0 and backoff.deadlines() == [] and not backoff.waiting(slot, 103.5)
    assert backoff.failed(slot, 200.0) == 201.0  # the count starts again


def test_r14_only_over_quota_and_at_most_every_20_seconds() -> None:
    quota = 512 * MiB
    assert not r14_due(total=quota, quota=quota, last_r14=0.0, now=1000.0)  # at the quota is not over it
    assert r14_due(total=quota + 1, quota=quota, last_r14=0.0, now=1000.0)
    assert not r14_due(total=2 * quota, quota=quota, last_r14=1000.0, now=1000.0 + R14_EVERY - 0.1)
    assert r14_due(total=2 * quota, quota=quota, last_r14=1000.0, now=1000.0 + R14_EVERY)


def test_an_oom_kill_is_reported_once_and_never_after_dynods_own_kill() -> None:
    assert oom_verdict(kills=0, seen=0, killed_for="") == OomVerdict(0, False)
    assert oom_verdict(kills=1, seen=0, killed_for="") == OomVerdict(1, True)
    assert oom_verdict(kills=1, seen=1, killed_for="R15") == OomVerdict(1, False)  # seen already
    assert oom_verdict(kills=2, seen=1, killed_for="R15") == OomVerdict(2, False)  # R15 said once
    assert oom_verdict(kills=1, seen=0, killed_for="R10") == OomVerdict(1, False)  # dynod killed it
    assert oom_verdict(kills=0, seen=3, killed_for="") == OomVerdict(3, False)  # a counter read that failed


def test_r15_reports_at_least_the_hard_limit() -> None:
    quota = 512 * MiB
    assert r15_usage(total=10 * MiB, quota=quota, hard_limit_ratio=2.0) == 1024 * MiB  # dropped after the kill
    assert r15_usage(total=None, quota=quota, hard_limit_ratio=2.0) == 1024 * MiB
    assert r15_usage(total=1100 * MiB, quota=quota, hard_limit_ratio=2.0) == 1100 * MiB


@pytest.mark.parametrize(("ready", "filling", "target", "closing", "can_rename", "made"), [
    (0, 0, 2, False, True, 2),
    (1, 0, 2, False, True, 1),
    (1, 1, 2, False, True, 0),
    (3, 0, 2, False, True, 0),  # never negative after the setting shrank
    (0, 0, 2, True, True, 0),  # shutting down
    (0, 0, 2, False, False, 0),  # cgroup v2: a group cannot become the dyno's
    (0, 0, 0, False, True, 0),
])
def test_warm_pool_refills_to_its_target(ready: int, filling: int, target: int, closing: bool,
                                         can_rename: bool, made: int) -> None:
    assert to_make(ready=ready, filling=filling, target=target, closing=closing, can_rename=can_rename) == made
