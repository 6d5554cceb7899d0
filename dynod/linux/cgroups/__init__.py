"""Per-dyno cgroups behind one interface, with a backend per cgroup version.

dynod makes one subtree, ``<parent>/<name>`` in each hierarchy it uses, where ``parent`` is the
cgroup dynod was started in (systemd's Delegate= model) unless a setting names another, and one
child per dyno beneath it. It never writes to a group it did not make, except the one write the
cgroup v2 delegation model requires (enabling controllers in the parent's subtree_control).

``detect()`` picks the backend: cgroup v1 where the memory controller is mounted as v1 (hybrid
hosts like this one), else cgroup v2 (pure-v2 hosts).
"""

from __future__ import annotations

import abc
import os
import signal
from dataclasses import dataclass

from ...errors import UserError
from .paths import CgroupMounts, read_mounts
from .primer import MovePrimer


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    memory_max: int  # the hard limit (bytes): above it the kernel's OOM killer acts (R15)
    memory_high: int  # the quota (bytes): above it is R14 (v2: reclaim pressure via memory.high)
    pids_max: int
    cpu_weight: int  # 1..10000, v2's scale; v1 converts to cpu.shares


@dataclass(frozen=True, slots=True)
class MemoryStats:
    total: int
    rss: int
    cache: int
    swap: int
    pgpgin: int
    pgpgout: int


class MemoryWatch(abc.ABC):
    """An fd that turns readable when a dyno's memory crosses its quota or an OOM kill happens.

    After a wake-up, call ``drain()`` and then look at ``oom_kills()`` and ``over_quota()`` on the
    cgroup: the events only say "look now", the counters say what happened.
    """

    @abc.abstractmethod
    def fileno(self) -> int: ...

    @abc.abstractmethod
    def drain(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class DynoCgroup(abc.ABC):
    def __init__(self, name: str, quota: int) -> None:
        self.name = name
        self.quota = quota

    @abc.abstractmethod
    def procs_files(self) -> list[str]:
        """The cgroup.procs files a new dyno writes "0" into to join (one per v1 hierarchy)."""

    def birth_procs_files(self) -> list[str]:
        """Those of procs_files() the spawner can fork a new dyno straight into (clone3 with
        CLONE_INTO_CGROUP: no move, no RCU grace period; dynod.linux.cgroups.birth). Only a cgroup2
        group can be born in, so a v1 dyno has none and is moved after the fork."""
        return []

    def time_own_join(self) -> float | None:
        """What a new dyno's own join of this group (the files it is not born in) costs on this
        host, in ms (birth.time_first_move: a real process moved in, ~0.5 s of waiting), or None
        when a dyno is born in all of it. The group must be empty and stays so."""
        left = [procs for procs in self.procs_files() if procs not in self.birth_procs_files()]
        if not left:
            return None
        from .birth import time_first_move

        return time_first_move(left)

    @abc.abstractmethod
    def pids(self) -> list[int]: ...

    def signal_all(self, sig: int) -> int:
        """Send ``sig`` to every process in the dyno (Heroku's stop sends SIGTERM to all)."""
        sent = 0
        for pid in self.pids():
            try:
                os.kill(pid, sig)
                sent += 1
            except ProcessLookupError:
                pass
        return sent

    def kill_all(self) -> None:
        self.signal_all(signal.SIGKILL)

    @abc.abstractmethod
    def memory_stats(self) -> MemoryStats: ...

    @abc.abstractmethod
    def oom_kills(self) -> int: ...

    def over_quota(self) -> bool:
        return self.memory_stats().total > self.quota

    @abc.abstractmethod
    def watch_memory(self) -> MemoryWatch: ...

    @abc.abstractmethod
    def remove(self) -> None:
        """Remove the group; its processes must have exited (call kill_all and reap first)."""


class CgroupBackend(abc.ABC):
    kind: str
    can_rename: bool  # whether rename() works (cgroup v1 only: cgroup2 has no rename op)

    @abc.abstractmethod
    def create(self, name: str, limits: CgroupLimits) -> DynoCgroup: ...

    @abc.abstractmethod
    def rename(self, group: DynoCgroup, name: str, limits: CgroupLimits) -> DynoCgroup:
        """Give a group (with its processes) a new name and new limits: a warm dyno taken."""

    @abc.abstractmethod
    def open(self, name: str, quota: int) -> DynoCgroup | None:
        """The existing group of a dyno (re-adoption after a dynod restart), or None."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Every dyno group in dynod's subtree."""

    @abc.abstractmethod
    def remove_subtree(self) -> None:
        """Remove dynod's own subtree (empty groups only), e.g. on shutdown."""

    @abc.abstractmethod
    def roots(self) -> list[str]:
        """The directories dynod made, one per hierarchy (for operators and for leak checks)."""

    @abc.abstractmethod
    def bound_subtree_pids(self, total: int) -> None:
        """pids.max on dynod's own subtree: every dyno and build together, whatever their sizes say."""

    def move_primer(self) -> MovePrimer | None:
        """A thread in a group of dynod's subtree whose no-op moves ready the kernel's cgroup write
        lock ahead of a cold dyno's moves (primer.py), or None where dynos are not moved: cgroup2
        forks them into their group (birth.py)."""
        return None


def detect(*, parent: str | None, name: str, mounts: CgroupMounts | None = None) -> CgroupBackend:
    mounts = mounts or read_mounts()
    if "memory" in mounts.v1:
        from .v1 import CgroupV1

        return CgroupV1(mounts, parent=parent, name=name)
    if mounts.v2 is not None:
        from .v2 import CgroupV2

        return CgroupV2(mounts, parent=parent, name=name)
    raise UserError("No usable cgroup hierarchy: mount cgroup2 at /sys/fs/cgroup (or v1 memory) and retry.")


def host_pid_max() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


def subtree_pids_max(setting: int, pid_max: int) -> int:
    """Pure: the bound on all dynos' processes together: ``[dynos] pids_total``, or half of the
    host's pid_max when it is 0 (the other half stays the host's, whatever the tenants fork)."""
    return setting if setting > 0 else max(pid_max // 2, 1)


def check_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or len(name) > 200:
        raise ValueError(f"bad cgroup name {name!r}")
    return name
