"""cgroup v1 backend (hybrid hosts): memory, pids and cpu each in their own hierarchy.

Memory files go through cgroupspy's MemoryController (the design card's v1 library); pids and cpu,
which cgroupspy does not cover, are written directly. OOM and quota crossings are read the v1
way: one eventfd registered through cgroup.event_control on memory.oom_control (fires on OOM, and
also when the group is removed) and on a memory.usage_in_bytes threshold at the quota. failcnt is
not used: with a memsw limit equal to the memory limit it stays 0 even after an OOM kill.
"""

from __future__ import annotations

import os

from cgroupspy.controllers import MemoryController

from . import CgroupBackend, CgroupLimits, DynoCgroup, MemoryStats, MemoryWatch, check_name
from .paths import CgroupMounts, read_keyed, read_pids, rmdir_when_empty, write
from .primer import PRIMER_CONTROLLERS, PRIMER_GROUP, MovePrimer

CONTROLLERS = ("memory", "pids", "cpu")


class _Dir:
    """The one attribute cgroupspy's controllers need from a tree node."""

    def __init__(self, full_path: str) -> None:
        self.full_path = os.fsencode(full_path)  # cgroupspy joins bytes paths


class _EventfdWatch(MemoryWatch):
    def __init__(self, directory: str, quota: int) -> None:
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        control = os.path.join(directory, "cgroup.event_control")
        for target, extra in (("memory.oom_control", ""), ("memory.usage_in_bytes", f" {quota}")):
            fd = os.open(os.path.join(directory, target), os.O_RDONLY | os.O_CLOEXEC)
            try:
                write(control, f"{self._efd} {fd}{extra}")
            finally:
                os.close(fd)  # the kernel keeps its own reference for the registration

    def fileno(self) -> int:
        return self._efd

    def drain(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self._efd >= 0:
            os.close(self._efd)
            self._efd = -1


class CgroupV1Dyno(DynoCgroup):
    def __init__(self, name: str, quota: int, dirs: dict[str, str]) -> None:
        super().__init__(name, quota)
        self.dirs = dirs
        self._memory = MemoryController(_Dir(dirs["memory"]))

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> list[int]:
        return read_pids(os.path.join(self.dirs["memory"], "cgroup.procs"))

    def memory_stats(self) -> MemoryStats:
        stat = self._memory.stat or {}
        return MemoryStats(
            total=self._memory.usage_in_bytes or 0,
            rss=stat.get("total_rss", 0),
            cache=stat.get("total_cache", 0),
            swap=stat.get("total_swap", 0),
            pgpgin=stat.get("total_pgpgin", 0),
            pgpgout=stat.get("total_pgpgout", 0),
        )

    def oom_kills(self) -> int:
        return read_keyed(os.path.join(self.dirs["memory"], "memory.oom_control")).get("oom_kill", 0)

    def watch_memory(self) -> MemoryWatch:
        return _EventfdWatch(self.dirs["memory"], self.quota)

    def remove(self) -> None:
        for directory in self.dirs.values():
            rmdir_when_empty(directory)


def _apply_limits(dirs: dict[str, str], limits: CgroupLimits) -> None:
    for controller, directory in dirs.items():
        if controller == "memory":
            memory = MemoryController(_Dir(directory))
            swap_limit = os.path.join(directory, "memory.memsw.limit_in_bytes")
            has_swap_limit = os.path.exists(swap_limit)
            if has_swap_limit and limits.memory_max > (memory.limit_in_bytes or 0):
                # memsw may never be below the memory limit: raise it first when growing...
                write(swap_limit, limits.memory_max)
            memory.limit_in_bytes = limits.memory_max
            memory.soft_limit_in_bytes = limits.memory_high
            if has_swap_limit:
                write(swap_limit, limits.memory_max)  # ...and no swap beyond the hard limit
        elif controller == "pids":
            write(os.path.join(directory, "pids.max"), limits.pids_max)
        elif controller == "cpu":
            # cpu.shares is 1024 for a default group; v2's weight is 100 for the same.
            write(os.path.join(directory, "cpu.shares"), max(2, limits.cpu_weight * 1024 // 100))


class CgroupV1(CgroupBackend):
    kind = "v1"
    can_rename = True

    def __init__(self, mounts: CgroupMounts, *, parent: str | None, name: str) -> None:
        self._roots: dict[str, str] = {}
        for controller in CONTROLLERS:
            hierarchy = mounts.v1.get(controller)
            if hierarchy is None:
                continue  # pids or cpu unmounted: run without that limit rather than not at all
            base = parent if parent is not None else hierarchy.own_path
            self._roots[controller] = os.path.join(hierarchy.directory(base), check_name(name))

    def roots(self) -> list[str]:
        return list(self._roots.values())

    def _ensure_roots(self) -> None:
        for controller, root in self._roots.items():
            if not os.path.isdir(root):
                os.makedirs(root, exist_ok=True)
            if controller == "memory":
                # Children are accounted into the subtree (always on since 5.x, harmless before).
                try:
                    write(os.path.join(root, "memory.use_hierarchy"), 1)
                except OSError:
                    pass

    def bound_subtree_pids(self, total: int) -> None:
        if "pids" in self._roots:
            self._ensure_roots()
            write(os.path.join(self._roots["pids"], "pids.max"), total)

    def create(self, name: str, limits: CgroupLimits) -> DynoCgroup:
        self._ensure_roots()
        dirs = {c: os.path.join(root, check_name(name)) for c, root in self._roots.items()}
        made: list[str] = []
        try:
            for directory in dirs.values():
                os.mkdir(directory)
                made.append(directory)
            _apply_limits(dirs, limits)
        except BaseException:
            for directory in reversed(made):
                rmdir_when_empty(directory)
            raise
        return CgroupV1Dyno(name, limits.memory_high, dirs)

    def rename(self, group: DynoCgroup, name: str, limits: CgroupLimits) -> DynoCgroup:
        assert isinstance(group, CgroupV1Dyno)
        dirs = {c: os.path.join(os.path.dirname(d), check_name(name)) for c, d in group.dirs.items()}
        _apply_limits(group.dirs, limits)  # first: a refusal leaves the group as it was
        done: list[str] = []
        try:
            for controller, directory in group.dirs.items():
                os.rename(directory, dirs[controller])  # cgroupfs renames within a parent, processes and all
                done.append(controller)
        except OSError:
            for controller in done:
                os.rename(dirs[controller], group.dirs[controller])
            raise
        return CgroupV1Dyno(name, limits.memory_high, dirs)

    def open(self, name: str, quota: int) -> DynoCgroup | None:
        dirs = {c: os.path.join(root, check_name(name)) for c, root in self._roots.items()}
        if not os.path.isdir(dirs["memory"]):
            return None
        return CgroupV1Dyno(name, quota, {c: d for c, d in dirs.items() if os.path.isdir(d)})

    def names(self) -> list[str]:
        found: set[str] = set()
        for root in self._roots.values():
            if os.path.isdir(root):
                found.update(e.name for e in os.scandir(root) if e.is_dir())
        found.discard(PRIMER_GROUP)
        return sorted(found)

    def move_primer(self) -> MovePrimer | None:
        for controller in PRIMER_CONTROLLERS:
            if controller in self._roots:
                self._ensure_roots()
                return MovePrimer(os.path.join(self._roots[controller], PRIMER_GROUP))
        return None

    def remove_subtree(self) -> None:
        for root in self._roots.values():
            if os.path.isdir(root):
                for entry in os.scandir(root):
                    if entry.is_dir():
                        rmdir_when_empty(entry.path)
                rmdir_when_empty(root)
