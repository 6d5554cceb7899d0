"""Where each cgroup hierarchy is mounted and where this process sits in it."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: str
    mount_root: str  # the hierarchy path the mount shows at its mountpoint (not "/" in containers)
    own_path: str  # this process's cgroup path in the hierarchy, from /proc/self/cgroup

    def directory(self, cgroup_path: str) -> str:
        """The directory of a cgroup path as seen through this mount."""
        rel = cgroup_path
        if self.mount_root != "/" and rel.startswith(self.mount_root):
            rel = rel[len(self.mount_root):]
        return os.path.join(self.mountpoint, rel.lstrip("/"))


@dataclass(frozen=True)
class CgroupMounts:
    v1: dict[str, Hierarchy] = field(default_factory=dict)  # controller name -> hierarchy
    v2: Hierarchy | None = None


def parse_mounts(mountinfo: str, proc_cgroup: str) -> CgroupMounts:
    """Pure: /proc/self/mountinfo and /proc/self/cgroup text in, hierarchies out."""
    own_v1: dict[str, str] = {}
    own_v2 = "/"
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            own_v2 = path
        for controller in controllers.split(","):
            if controller:
                own_v1[controller] = path
    v1: dict[str, Hierarchy] = {}
    v2: Hierarchy | None = None
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields_left = left.split()
        fields_right = right.split()
        if len(fields_left) < 5 or len(fields_right) < 3:
            continue
        root, mountpoint = fields_left[3], fields_left[4]
        fstype, super_opts = fields_right[0], fields_right[2]
        if fstype == "cgroup2" and v2 is None:
            v2 = Hierarchy(mountpoint, root, own_v2)
        elif fstype == "cgroup":
            for opt in super_opts.split(","):
                if opt in own_v1 and opt not in v1:
                    v1[opt] = Hierarchy(mountpoint, root, own_v1[opt])
    return CgroupMounts(v1=v1, v2=v2)


def read_mounts() -> CgroupMounts:
    with open("/proc/self/mountinfo") as mi, open("/proc/self/cgroup") as cg:
        return parse_mounts(mi.read(), cg.read())


def read_int(path: str) -> int:
    with open(path) as f:
        text = f.read().strip()
    return 2**63 - 1 if text == "max" else int(text)


def write(path: str, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def rmdir_when_empty(directory: str, timeout: float = 2.0) -> None:
    # A process (or thread) that has exited but not yet been fully torn down still counts for a moment.
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def read_keyed(path: str) -> dict[str, int]:
    """memory.stat / memory.events / memory.oom_control: "key value" lines."""
    result: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(" ")
            try:
                result[key] = int(value)
            except ValueError:
                continue
    return result


def read_pids(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []
