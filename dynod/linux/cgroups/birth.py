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
    tuning of docs/operations.md), going by /proc/self/mountinfo. Then a move costs ~0.3 ms with
    no grace period, so a new dyno can write its own cgroup.procs files (in the child, before it
    builds its root) instead of dynod moving it from threads after the fork. The option is global
    to the lock, so one hierarchy having it is enough. Not seen: a kernel that kept the switch
    after the mount went away (operations.md): that host is only reported as not tuned."""
    for line in mountinfo.splitlines():
        _, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) >= 3 and fields[0] in ("cgroup", "cgroup2") and "favordynmods" in fields[2].split(","):
            return True
    return False


# clone3 itself (kernels before 5.3) or CLONE_INTO_CGROUP (before 5.7) unknown: fork and move.
UNSUPPORTED = (errno.ENOSYS, errno.E2BIG, errno.EINVAL)
