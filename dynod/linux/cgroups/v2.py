"""cgroup v2 backend (pure-v2 hosts): one directory per dyno with every controller.

memory.high at the quota applies reclaim pressure (R14 territory), memory.max at the hard limit
(R15), memory.swap.max 0, memory.oom.group so an OOM kill takes the whole dyno down (it is
restarted as a unit, as Heroku does), pids.max, cpu.weight; cgroup.kill stops every process at
once. Memory events are watched with inotify on memory.events (the kernel signals a modify on
each counter change); polling it would spin because kernfs files always poll readable.
"""

from __future__ import annotations

import errno
import os

from ...errors import UserError
from .. import syscalls
from . import CgroupBackend, CgroupLimits, DynoCgroup, MemoryStats, MemoryWatch, check_name
from .paths import CgroupMounts, read_int, read_keyed, read_pids, rmdir_when_empty, write

WANTED = ("memory", "pids", "cpu")


class _InotifyWatch(MemoryWatch):
    def __init__(self, directory: str) -> None:
        self._fd = syscalls.inotify_init()
        syscalls.inotify_add_watch(self._fd, os.path.join(directory, "memory.events"), syscalls.IN_MODIFY)

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> None:
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class CgroupV2Dyno(DynoCgroup):
    def __init__(self, name: str, quota: int, directory: str) -> None:
        super().__init__(name, quota)
        self.directory = directory

    def _file(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def procs_files(self) -> list[str]:
        return [self._file("cgroup.procs")]

    def birth_procs_files(self) -> list[str]:
        return self.procs_files()

    def pids(self) -> list[int]:
        return read_pids(self._file("cgroup.procs"))

    def kill_all(self) -> None:
        try:
            write(self._file("cgroup.kill"), 1)
        except OSError as exc:  # kernels before 5.14 have no cgroup.kill
            if exc.errno not in (errno.ENOENT, errno.EACCES):
                raise
            super().kill_all()

    def memory_stats(self) -> MemoryStats:
        stat = read_keyed(self._file("memory.stat"))
        swap = self._file("memory.swap.current")
        return MemoryStats(
            total=read_int(self._file("memory.current")),
            rss=stat.get("anon", 0),
            cache=stat.get("file", 0),
            swap=read_int(swap) if os.path.exists(swap) else 0,
            pgpgin=stat.get("pgfault", 0),
            pgpgout=stat.get("pgmajfault", 0),
        )

    def oom_kills(self) -> int:
        return read_keyed(self._file("memory.events")).get("oom_kill", 0)

    def watch_memory(self) -> MemoryWatch:
        return _InotifyWatch(self.directory)

    def remove(self) -> None:
        rmdir_when_empty(self.directory)


def _apply_limits(directory: str, controllers: set[str], limits: CgroupLimits) -> None:
    if "memory" in controllers:
        write(os.path.join(directory, "memory.max"), limits.memory_max)
        write(os.path.join(directory, "memory.high"), limits.memory_high)
        write(os.path.join(directory, "memory.oom.group"), 1)
        if os.path.exists(os.path.join(directory, "memory.swap.max")):
            write(os.path.join(directory, "memory.swap.max"), 0)
    if "pids" in controllers:
        write(os.path.join(directory, "pids.max"), limits.pids_max)
    if "cpu" in controllers:
        write(os.path.join(directory, "cpu.weight"), max(1, min(10000, limits.cpu_weight)))


class CgroupV2(CgroupBackend):
    kind = "v2"
    # The kernel gives cgroup2 directories no rename: a warm dyno cannot become a named one. On
    # v2 a cold start needs one move (one hierarchy), so dynod keeps no warm pool there.
    can_rename = False

    def __init__(self, mounts: CgroupMounts, *, parent: str | None, name: str) -> None:
        assert mounts.v2 is not None
        base = parent if parent is not None else mounts.v2.own_path
        self._parent = mounts.v2.directory(base)
        self._root = os.path.join(self._parent, check_name(name))

    def roots(self) -> list[str]:
        return [self._root]

    def available_controllers(self) -> set[str]:
        with open(os.path.join(self._parent, "cgroup.controllers")) as f:
            return set(f.read().split())

    def _enable(self, directory: str, controllers: set[str]) -> None:
        if controllers:
            write(os.path.join(directory, "cgroup.subtree_control"), " ".join(f"+{c}" for c in sorted(controllers)))

    def _ensure_root(self) -> set[str]:
        controllers = self.available_controllers() & set(WANTED)
        if os.path.isdir(self._root):
            return controllers
        try:
            self._enable(self._parent, controllers)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # v2's "no internal processes" rule: the parent holds processes, so it cannot hand
            # controllers down. Under systemd Delegate= that is only dynod itself.
            raise UserError(
                f"cgroup v2: {self._parent} holds processes, so controllers cannot be delegated to "
                "dynod's subtree; run dynod in a cgroup of its own (systemd Delegate=yes) or set "
                "[cgroups] parent to an empty group."
            ) from None
        os.makedirs(self._root, exist_ok=True)
        self._enable(self._root, controllers)
        return controllers

    def bound_subtree_pids(self, total: int) -> None:
        if "pids" in self._ensure_root():
            write(os.path.join(self._root, "pids.max"), total)

    def create(self, name: str, limits: CgroupLimits) -> DynoCgroup:
        controllers = self._ensure_root()
        directory = os.path.join(self._root, check_name(name))
        os.mkdir(directory)
        try:
            _apply_limits(directory, controllers, limits)
        except BaseException:
            rmdir_when_empty(directory)
            raise
        return CgroupV2Dyno(name, limits.memory_high, directory)

    def rename(self, group: DynoCgroup, name: str, limits: CgroupLimits) -> DynoCgroup:
        raise OSError(errno.EPERM, "cgroup2 directories cannot be renamed")

    def open(self, name: str, quota: int) -> DynoCgroup | None:
        directory = os.path.join(self._root, check_name(name))
        return CgroupV2Dyno(name, quota, directory) if os.path.isdir(directory) else None

    def names(self) -> list[str]:
        if not os.path.isdir(self._root):
            return []
        return sorted(e.name for e in os.scandir(self._root) if e.is_dir())

    def remove_subtree(self) -> None:
        if os.path.isdir(self._root):
            for entry in os.scandir(self._root):
                if entry.is_dir():
                    rmdir_when_empty(entry.path)
            rmdir_when_empty(self._root)
