"""Where a dyno can be born: the cgroup its fork puts it in, and the moves still left after it.

A move into a group (a ``cgroup.procs`` write) takes the kernel's cgroup write lock; without the
host tuning ``favordynmods`` the first one of a burst waits out an RCU grace period (7-19 ms
measured, docs/operations.md). clone3(2) with CLONE_INTO_CGROUP instead makes the child in its
cgroup2 group directly, under the read side of that lock: no move, no wait. It exists for cgroup2
only, so on a pure-v2 host (one group with every controller) a dyno needs no move at all, while on
a hybrid host the v1 hierarchies (memory, cpu, pids) still take their writes.
"""

from __future__ import annotations

import errno
import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .paths import CgroupMounts


@dataclass(frozen=True, slots=True)
class Birth:
    into: str | None  # the cgroup2 directory the fork makes the child in; None: a plain fork
    joins: tuple[str, ...]  # the cgroup.procs files still written after the fork (v1 hierarchies)


def birth(procs_files: Sequence[str], mounts: CgroupMounts) -> Birth:
    """Pure: the cgroup.procs files a new dyno must join, split into the one cgroup2 group its
    fork can make it in and the rest (v1, or everything when there is no cgroup2 mount)."""
    v2 = mounts.v2.mountpoint.rstrip("/") + "/" if mounts.v2 is not None else None
    into: str | None = None
    joins: list[str] = []
    for procs in procs_files:
        directory, name = os.path.split(procs)
        if name != "cgroup.procs":
            raise ValueError(f"{procs!r} is no cgroup.procs file")
        if v2 is not None and (directory + "/").startswith(v2):
            if into is not None:
                raise ValueError(f"two cgroup2 groups for one dyno: {into} and {directory}")
            into = directory
        else:
            joins.append(procs)
    return Birth(into, tuple(joins))


def open_group(directory: str) -> int:
    """An fd for CLONE_INTO_CGROUP (O_PATH is enough: the kernel checks write access to the
    group's cgroup.procs at the clone, as it would for the write)."""
    return os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def favors_dynamic_moves(mountinfo: str) -> bool:
    """Pure: whether a cgroup hierarchy of this host is mounted with ``favordynmods`` (the host
    tuning of docs/operations.md), going by /proc/self/mountinfo. The option is global to the
    lock, so one hierarchy having it is enough. Not seen: a kernel that kept the switch after the
    mount went away (6.18 keeps its per-process lock until reboot, operations.md); for that host
    ``time_first_move`` is the truthful answer."""
    for line in mountinfo.splitlines():
        _, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) >= 3 and fields[0] in ("cgroup", "cgroup2") and "favordynmods" in fields[2].split(","):
            return True
    return False


# clone3 itself (kernels before 5.3) or CLONE_INTO_CGROUP (before 5.7) unknown: fork and move.
UNSUPPORTED = (errno.ENOSYS, errno.E2BIG, errno.EINVAL)


# A new dyno joins its v1 groups itself (in the child, first thing, while dynod wires its veth)
# when the join costs less than this; above it the join waits out an RCU grace period (4.6-16.8 ms
# for the first write of a burst, operations.md), which dynod's moves overlap with the veth and
# the child's root instead. With favordynmods in effect the three writes took 0.25-0.4 ms here.
CHEAP_JOIN_MS = 2.0
SETTLE_S = 0.15  # idle time before each timed join: the lock's fast mode, if any, lapses by then


def time_first_move(procs_files: Sequence[str], *, rounds: int = 3, settle: float = SETTLE_S) -> float:
    """What a new dyno's own join costs on this host, in ms: a process of no use (a sleep) is
    moved into ``procs_files`` as a dyno would be, after ``settle`` s with no move of ours, so the
    write is the first of its burst; the median of ``rounds``. Each process is killed and reaped
    before the next; the groups are the caller's (it removes them)."""
    took = []
    for _ in range(rounds):
        sleeper = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, close_fds=True)
        try:
            time.sleep(settle)
            begin = time.perf_counter()
            for procs in procs_files:
                with open(procs, "w") as f:
                    f.write(str(sleeper.pid))
            took.append((time.perf_counter() - begin) * 1000)
        finally:
            sleeper.kill()
            sleeper.wait()
    return statistics.median(took)
