"""The move primer against the real kernel: one dynod thread in a group of dynod's own subtree,
whose primes are moves into the group it is already in.

What it must never do is what a no-op move could get wrong: move the thread (or dynod) anywhere
else, write to a group dynod did not make, count as a dyno, or stay behind. Whether it makes the
next move cheaper is a timing, measured by bench/start (docs/dynos.md), not asserted here.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path

import pytest

from dynod.linux.cgroups import detect
from dynod.linux.cgroups.paths import read_mounts
from dynod.linux.cgroups.primer import PRIMER_CONTROLLERS, PRIMER_GROUP, MovePrimer

pytestmark = pytest.mark.integration


def _v1_groups(task: str) -> dict[str, str]:
    """controller -> the task's v1 group path, from /proc/.../cgroup."""
    groups = {}
    for line in Path(task, "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller:
                groups[controller] = path
    return groups


def _tasks_of(directory: str) -> list[int]:
    return [int(t) for t in Path(directory, "tasks").read_text().split()]


def test_a_primer_thread_lives_alone_in_its_own_group_and_its_primes_move_nothing() -> None:
    mounts = read_mounts()
    if "memory" not in mounts.v1:
        pytest.skip("a cgroup v1 host: the primer readies v1 moves")
    backend = detect(parent=None, name=f"dynod-test-primer-{secrets.token_hex(3)}")
    process_before = _v1_groups("/proc/self")
    main_before = _v1_groups(f"/proc/self/task/{threading.get_native_id()}")
    primer = backend.move_primer()
    assert isinstance(primer, MovePrimer)
    try:
        assert primer.wait_joined(timeout=10) is None
        controller = next(c for c in PRIMER_CONTROLLERS if c in mounts.v1)
        assert primer.group == os.path.join(_root_of(backend, controller), PRIMER_GROUP)  # dynod's subtree
        assert _tasks_of(primer.group) == [primer.tid]  # the thread alone: no process, no other thread
        thread_groups = _v1_groups(f"/proc/self/task/{primer.tid}")
        assert thread_groups[controller].endswith(f"/{PRIMER_GROUP}")
        # Every other group of the thread is the one it was started in; the process stays put.
        assert {c: p for c, p in thread_groups.items() if c != controller} == \
            {c: p for c, p in main_before.items() if c != controller}
        for _ in range(3):
            primes = primer.primes
            primer.prime()
            _wait(lambda primes=primes: primer.primes > primes)
        assert _tasks_of(primer.group) == [primer.tid]
        assert _v1_groups(f"/proc/self/task/{primer.tid}") == thread_groups  # moved nowhere
        assert _v1_groups("/proc/self") == process_before
        assert PRIMER_GROUP not in backend.names()  # not a dyno: adoption's sweep never kills its "process" (dynod)
    finally:
        primer.close()
        backend.remove_subtree()
    assert not os.path.exists(primer.group)
    assert not any(os.path.exists(root) for root in backend.roots())
    assert primer.tid not in [t.native_id for t in threading.enumerate()]


def test_a_primer_left_by_a_killed_dynod_is_taken_over_and_removed() -> None:
    if "memory" not in read_mounts().v1:
        pytest.skip("a cgroup v1 host")
    backend = detect(parent=None, name=f"dynod-test-primer-{secrets.token_hex(3)}")
    first = backend.move_primer()
    assert first is not None and first.wait_joined(timeout=10) is None
    group = first.group
    # A dynod killed -9 takes its thread with it and leaves the empty group: the next one's
    # primer moves its own thread in.
    first._closed = True
    first._wanted.set()
    first._thread.join()
    second = backend.move_primer()
    assert second is not None
    try:
        assert second.wait_joined(timeout=10) is None and second.group == group
        assert _tasks_of(group) == [second.tid]
    finally:
        second.close()
        backend.remove_subtree()
    assert not any(os.path.exists(root) for root in backend.roots())


def _root_of(backend: object, controller: str) -> str:
    return backend._roots[controller]  # type: ignore[attr-defined]


def _wait(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the primer did not prime"
        time.sleep(0.005)
