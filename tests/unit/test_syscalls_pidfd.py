"""dynod.linux.pidfd against the real kernel (pidfds and flock need no root)."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.linux import pidfd

# A process that takes a lock, hands it to a keeper watching WATCHED, prints, and exits.
HOLDER = """
import fcntl, os, sys
from dynod.linux.pidfd import keep_open_until_exit
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
keep_open_until_exit(int(sys.argv[2]), float(sys.argv[3]))
print("handed over", flush=True)
"""


def locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_unlocked(path: Path, seconds: float) -> float:
    start = time.monotonic()
    while locked(path):
        if time.monotonic() - start > seconds:
            pytest.fail(f"{path} still locked after {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - start


def run_holder(lock: Path, watched: int, timeout: float) -> subprocess.CompletedProcess[str]:
    # communicate() returns at the holder's EOF: a keeper that kept stdout open would hang it.
    return subprocess.run([sys.executable, "-c", HOLDER, str(lock), str(watched), str(timeout)],
                          capture_output=True, text=True, timeout=30, check=True)


@pytest.fixture
def watched() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_the_lock_outlives_its_taker_until_the_watched_process_exits(tmp_path: Path,
                                                                     watched: subprocess.Popen[bytes]) -> None:
    lock = tmp_path / "lock"
    done = run_holder(lock, watched.pid, 60.0)
    assert done.stdout == "handed over\n"  # and its stdout closed at its own exit
    time.sleep(0.2)
    assert locked(lock)  # the holder is gone; its keeper holds on
    watched.kill()
    watched.wait()
    assert wait_unlocked(lock, 5.0) < 5.0


def test_the_keeper_gives_up_after_its_timeout(tmp_path: Path, watched: subprocess.Popen[bytes]) -> None:
    lock = tmp_path / "lock"
    run_holder(lock, watched.pid, 0.5)
    assert wait_unlocked(lock, 5.0) < 5.0
    assert watched.poll() is None  # released by the timeout, not by the watched process


def test_a_watched_process_already_gone_keeps_nothing(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = tmp_path / "lock"
    run_holder(lock, gone.pid, 60.0)
    assert not locked(lock)


def test_a_pidfd_turns_readable_at_exit_and_never_signals_a_reaped_process() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    fd = pidfd.watch(proc.pid)
    try:
        assert select.select([fd], [], [], 0)[0] == []
        pidfd.send_signal(fd, signal.SIGTERM)
        assert select.select([fd], [], [], 5)[0] == [fd]
        assert proc.wait() == -signal.SIGTERM
        with pytest.raises(ProcessLookupError):
            pidfd.send_signal(fd, signal.SIGKILL)  # reaped: whatever holds its pid now is safe
    finally:
        os.close(fd)
        proc.kill()
        proc.wait()


def test_watch_if_member_pins_only_a_running_member() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        fd = pidfd.watch_if_member(proc.pid, lambda: [1, proc.pid])
        assert fd is not None
        os.close(fd)
        assert pidfd.watch_if_member(proc.pid, lambda: [1]) is None  # runs, but not in the group

        def unreadable() -> list[int]:
            raise FileNotFoundError("cgroup.procs")  # its group is gone: not a member
        assert pidfd.watch_if_member(proc.pid, unreadable) is None
    finally:
        proc.kill()
        proc.wait()
    assert pidfd.watch_if_member(proc.pid, lambda: [proc.pid]) is None  # reaped


def test_wait_exit_returns_at_the_exit_of_a_process_and_closes_its_fd() -> None:
    import trio

    proc = subprocess.Popen(["sleep", "60"])
    fd = pidfd.watch(proc.pid)

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, lambda: (time.sleep(0.2), proc.kill()))
            start = time.monotonic()
            with trio.fail_after(10):
                await pidfd.wait_exit(fd)
            return time.monotonic() - start

    try:
        assert trio.run(main) >= 0.15  # it waited for the kill, not returned at once
        # Closed: the number is free, or (reused since) names something other than a pidfd.
        try:
            assert os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[pidfd]"
        except FileNotFoundError:
            pass
    finally:
        proc.kill()
        proc.wait()


def test_the_push_hook_and_its_lock_keeper_load_no_trio() -> None:
    # dynod.builds.git runs as git's pre-receive hook, once per push: stdlib only.
    code = "import sys, dynod.builds.git, dynod.linux.process; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
