"""The crash restart policy: first crash at once, then a growing cool-off, reset by a release."""

from __future__ import annotations

import pytest

from dynod.manager.restart_policy import CrashHistory, RestartPolicy, consecutive_crashes, next_restart_delay
from dynod.settings import DynoSettings

POLICY = RestartPolicy(cooloff_base=20.0, cooloff_max=1200.0, stable_after=600.0)


def test_cooloff_is_zero_then_doubles_up_to_the_maximum() -> None:
    assert [POLICY.cooloff(n) for n in range(1, 10)] == [0, 20, 40, 80, 160, 320, 640, 1200, 1200]


def test_cooloff_never_overflows() -> None:
    assert POLICY.cooloff(10_000) == 1200.0


def test_policy_reads_the_settings() -> None:
    policy = RestartPolicy.from_settings(DynoSettings(restart_cooloff_base=5, restart_cooloff_max=60))
    assert (policy.cooloff(2), policy.cooloff(99)) == (5, 60)


def crash_loop(history: CrashHistory, count: int, *, release: int = 1, run_for: float = 1.0) -> list[float]:
    """Crash ``count`` times, restarting each time exactly when allowed; return the waits."""
    waits, started = [], 0.0
    for _ in range(count):
        crashed = started + run_for
        restart = history.record_crash(started_at=started, crashed_at=crashed, release=release)
        waits.append(restart - crashed)
        started = restart
    return waits


def test_a_crash_loop_backs_off() -> None:
    assert crash_loop(CrashHistory(POLICY), 9) == [0, 20, 40, 80, 160, 320, 640, 1200, 1200]


def test_a_new_release_resets_the_cooloff() -> None:
    history = CrashHistory(POLICY)
    crash_loop(history, 5, release=1)
    assert crash_loop(history, 2, release=2) == [0, 20]


def test_a_dyno_that_stayed_up_long_enough_restarts_at_once() -> None:
    history = CrashHistory(POLICY)
    crash_loop(history, 4)
    assert history.record_crash(started_at=1000.0, crashed_at=1600.0, release=1) == 1600.0
    assert history.consecutive == 1


def test_a_short_run_does_not_reset() -> None:
    history = CrashHistory(POLICY)
    crash_loop(history, 3)
    assert history.record_crash(started_at=1000.0, crashed_at=1599.0, release=1) == 1599.0 + 80.0


def test_reset_forgets_crashes() -> None:
    history = CrashHistory(POLICY)
    crash_loop(history, 6)
    history.reset()
    assert crash_loop(history, 2) == [0, 20]


@pytest.mark.parametrize("n", [0, -3])
def test_no_crash_means_no_wait(n: int) -> None:
    assert POLICY.cooloff(n) == 0.0


# ---- the crash-times form ------------------------------------------------------------------------

def test_delays_from_crash_times_alone_match_the_history_object() -> None:
    crashes: list[float] = []
    started, waits = 0.0, []
    for _ in range(9):
        crashed = started + 1.0
        crashes.append(crashed)
        wait = next_restart_delay(crashes, now=crashed)
        waits.append(wait)
        started = crashed + wait
    assert waits == crash_loop(CrashHistory(POLICY), 9)


def test_delay_counts_from_now() -> None:
    assert next_restart_delay([100.0, 101.0], now=111.0) == 10.0  # 20 s cool-off, 10 s already gone
    assert next_restart_delay([100.0, 101.0], now=500.0) == 0.0
    assert next_restart_delay([], now=5.0) == 0.0


def test_a_long_run_between_crashes_starts_a_new_count() -> None:
    # Crash at 0 (restart at 0), crash at 1 (restart at 21), then up until 621: 600 s is stable.
    assert consecutive_crashes([0.0, 1.0, 621.0], POLICY) == 1
    assert consecutive_crashes([0.0, 1.0, 620.9], POLICY) == 3
    assert next_restart_delay([0.0, 1.0, 621.0], now=621.0) == 0.0


def test_settings_values_pass_through() -> None:
    assert next_restart_delay([0.0, 1.0, 2.0], now=2.0, base=5.0, maximum=7.0) == 7.0
