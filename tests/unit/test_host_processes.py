"""dynod.linux.process against the real kernel (signals to our own children need no root)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from dynod.linux import process


def test_exists_sees_a_running_process_and_a_zombie_but_not_a_reaped_one() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    assert process.exists(proc.pid)
    proc.kill()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert process.exists(proc.pid)
    process.reap_if_exited(proc.pid)
    assert not process.exists(proc.pid)
    proc.returncode = -signal.SIGKILL  # reaped behind Popen's back: tell it, so it does not wait


def test_reap_if_exited_leaves_a_running_child_and_a_stranger_alone() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        process.reap_if_exited(proc.pid)  # still runs: nothing reaped, nothing raised
        assert proc.poll() is None
        process.reap_if_exited(1)  # not our child
        assert process.exists(1)  # PID 1 exists even when it is not ours to signal
    finally:
        proc.kill()
        proc.wait()


def test_signal_group_reaches_every_process_of_the_group_and_says_when_none_is_left() -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(_members(leader.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_members(leader.pid)) == 3
        assert process.signal_group(leader.pid, signal.SIGKILL)
        assert leader.wait(5) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while _members(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.02)  # the two sleeps died too (zombies until their new parent reaps them)
        assert _members(leader.pid) == []
    finally:
        leader.kill()
        leader.wait()


def test_signal_group_says_when_none_of_the_group_is_left() -> None:
    lone = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert process.signal_group(lone.pid, signal.SIGTERM)
        assert lone.wait(5) == -signal.SIGTERM
        assert not process.signal_group(lone.pid, signal.SIGKILL)  # reaped: no group of that id
    finally:
        lone.kill()
        lone.wait()


def _members(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found
