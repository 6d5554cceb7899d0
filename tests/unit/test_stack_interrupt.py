"""An interrupted stack build stops the command it ran and everything that command started
(dynod.stack.bootstrap._run_logged: SIGTERM to its session's group; no root needed)."""

from __future__ import annotations

import os
import time

import pytest

from dynod.stack.bootstrap import _run_logged


def test_an_interrupted_build_command_takes_its_whole_group_with_it() -> None:
    # The command starts a grandchild and names it; the first line "interrupts" the build.
    children: list[int] = []

    def interrupted(line: str) -> None:
        children.append(int(line))
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _run_logged(["/bin/sh", "-c", "sleep 60 & echo $!; wait"], "test", "a test command",
                    lambda line: True, interrupted)
    assert time.monotonic() - started < 8  # SIGTERM took it, not the 10 s SIGKILL fallback
    (grandchild,) = children
    deadline = time.monotonic() + 5
    while _running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _running(grandchild)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_test_sees_a_surviving_grandchild() -> None:
    # The check above can fail: a process outside the command's group is still seen running.
    assert _running(os.getpid())
