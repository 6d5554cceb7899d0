"""The manager's process syscalls: signals, process-group kills, joining a cgroup.

The dyno manager reaches processes only through ``HostProcesses`` (its ``Processes`` seam,
dynod/manager/runtime.py), so its stop, kill and adoption logic is unit-tested against an
in-memory fake and the real calls stay here, covered by the integration tests. Following a
process through a pidfd is ``dynod.linux.pidfd``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from . import pidfd


def signal_process(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid``; False if it had already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def exists(pid: int) -> bool:
    """Whether a process (or an unreaped zombie) has the pid ``pid``: signal 0 checks without
    sending anything. One that is not ours to signal still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_if_exited(pid: int) -> None:
    """Reap ``pid`` if it is an exited child of this process, so no zombie stays behind; nothing
    if it still runs or is not our child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pgid``; False if none of it is left (or not ours)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def join_cgroup(procs_file: str, pid: int) -> None:
    """Move ``pid`` into the group whose ``cgroup.procs`` is ``procs_file`` (one write)."""
    with open(procs_file, "w") as f:
        f.write(str(pid))


class HostProcesses:
    """The real kernel, as the manager's ``Processes``."""

    def signal(self, pid: int, sig: int) -> bool:
        return signal_process(pid, sig)

    def signal_group(self, pgid: int, sig: int) -> bool:
        return signal_group(pgid, sig)

    def join_cgroup(self, procs_file: str, pid: int) -> None:
        join_cgroup(procs_file, pid)

    def follow(self, pid: int, members: Callable[[], Iterable[int]]) -> int | None:
        return pidfd.watch_if_member(pid, members)

    async def wait_exit(self, handle: int) -> None:
        await pidfd.wait_exit(handle)
