"""Processes watched through pidfds: a descriptor that names one process, and never another.

A pid can be reused as soon as its process is reaped; a pidfd cannot. Waiting on one (it turns
readable when the process exits) needs no parent-child relation and no polling of /proc. Every
pidfd dynod opens is opened here: the add-on servers', a re-adopted dyno init's (through
``dynod.linux.process.HostProcesses``) and a build lock's keeper.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable, Iterable


def watch(pid: int) -> int:
    """A pidfd on ``pid`` (close-on-exec): readable once it exits. ProcessLookupError if gone."""
    return os.pidfd_open(pid)


def watch_if_member(pid: int, members: Callable[[], Iterable[int]]) -> int | None:
    """A pidfd on ``pid`` if it runs and is one of ``members()`` (the pids of its cgroup).

    The membership is checked after the open: the fd pins this very process, so a pid reused since
    by another process cannot pass for it.
    """
    try:
        pidfd = watch(pid)
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
    # trio is imported here, not with the module: the push hook (dynod.builds.git) imports this
    # module for its lock keeper and stays stdlib-only, a short-lived process's start-up.
    import trio

    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def send_signal(pidfd: int, sig: int) -> None:
    """``sig`` to the process the pidfd names, never to a later one that reused its pid
    (ProcessLookupError once it is reaped)."""
    signal.pidfd_send_signal(pidfd, sig)


def keep_open_until_exit(pid: int, timeout: float) -> None:
    """Keep this process's open descriptors (and so the flocks they hold) open after it exits,
    until process ``pid`` exits or ``timeout`` seconds pass; returns at once.

    A detached child does the keeping: forked copies of the descriptors stay open until its
    exit (O_CLOEXEC acts only on exec). It closes stdin, stdout and stderr first, so whoever reads
    them sees EOF when this process exits, not when the child does. If ``pid`` is already gone
    nothing is kept.
    """
    try:
        watched = watch(pid)
    except OSError:
        return
    if os.fork() != 0:
        os.close(watched)
        return
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):
            os.dup2(devnull, std)
        select.select([watched], [], [], timeout)
    finally:
        os._exit(0)
