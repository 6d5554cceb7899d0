"""The manager's process syscalls: signals, joining a cgroup, following a process through a pidfd.

The dyno manager reaches processes only through ``HostProcesses`` (its ``Processes`` seam,
dynod/manager/runtime.py), so its stop, kill and adoption logic is unit-tested against an
in-memory fake and the real calls stay here, covered by the integration tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import trio


def signal_process(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid``; False if it had already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


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


def pidfd_if_member(pid: int, members: Callable[[], Iterable[int]]) -> int | None:
    """A pidfd on ``pid`` if it runs and is one of ``members()`` (the pids of its cgroup).

    The membership is checked after the open: the fd pins this very process, so a pid reused since
    by another process cannot pass for it.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        inside = pid in members()
    except OSError:
        inside = False
    if not inside:
        os.close(pidfd)
        return None
    return pidfd


async def wait_exit(pidfd: int) -> None:
    """Until the process of ``pidfd`` exits (it need not be our child); closes the fd."""
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


class HostProcesses:
    """The real kernel, as the manager's ``Processes``."""

    def signal(self, pid: int, sig: int) -> bool:
        return signal_process(pid, sig)

    def signal_group(self, pgid: int, sig: int) -> bool:
        return signal_group(pgid, sig)

    def join_cgroup(self, procs_file: str, pid: int) -> None:
        join_cgroup(procs_file, pid)

    def follow(self, pid: int, members: Callable[[], Iterable[int]]) -> int | None:
        return pidfd_if_member(pid, members)

    async def wait_exit(self, handle: int) -> None:
        await wait_exit(handle)
