"""A dyno's own view of its cgroup: its limits, read-only, where buildpacks look for them.

Heroku's buildpacks (and JVMs, Node, gunicorn sizing scripts) read the memory limit from
``/sys/fs/cgroup/memory/memory.limit_in_bytes`` (cgroup v1) or ``/sys/fs/cgroup/memory.max``
(cgroup v2). A dyno gets those files from a cgroup filesystem mounted inside its own cgroup
namespace, so the mount's root is the dyno's own group: its limits and usage, nothing of the
host's hierarchy or of any other dyno. Which hierarchies to mount is worked out once, in the
spawner, from the host's mount table (``dyno_cgroup_mounts``); each dyno then only mounts them.
"""

from __future__ import annotations

from dataclasses import dataclass

# The v1 controllers dynod puts a dyno in (v1.CONTROLLERS). Others (cpuacct, cpuset, ...) would
# show the spawner's own group in them, not the dyno's: they stay out.
DYNO_CONTROLLERS = ("memory", "pids", "cpu")


@dataclass(frozen=True, slots=True)
class CgroupMount:
    fstype: str  # "cgroup" (v1) or "cgroup2"
    options: str  # v1: the host hierarchy's own option set ("cpu,cpuacct"), or the mount is refused
    name: str  # the directory under /sys/fs/cgroup ("" for cgroup2: the mount is /sys/fs/cgroup itself)
    aliases: tuple[str, ...] = ()  # symlinks to ``name`` (systemd's cpu -> cpu,cpuacct)

    def to_json(self) -> list[object]:
        return [self.fstype, self.options, self.name, list(self.aliases)]

    @classmethod
    def from_json(cls, data: list[object]) -> CgroupMount:
        fstype, options, name, aliases = data
        return cls(str(fstype), str(options), str(name), tuple(str(a) for a in aliases))  # type: ignore[union-attr]


def dyno_cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """Pure: the host's /proc/self/mountinfo in, the cgroup mounts a dyno should have out.

    Where the memory controller is on cgroup v1 (hybrid hosts) a dyno gets the v1 hierarchies it
    is placed in; otherwise, on a pure v2 host, the unified hierarchy at /sys/fs/cgroup.
    """
    v1: list[CgroupMount] = []
    has_v2 = False
    seen: set[str] = set()
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields_left, fields_right = left.split(), right.split()
        if len(fields_left) < 5 or len(fields_right) < 3:
            continue
        fstype, super_opts = fields_right[0], fields_right[2].split(",")
        if fstype == "cgroup2":
            has_v2 = True
        if fstype != "cgroup":
            continue
        options = [o for o in super_opts if o not in ("rw", "ro")]
        ours = [c for c in DYNO_CONTROLLERS if c in options and c not in seen]
        if not ours:
            continue
        seen.update(ours)
        name = fields_left[4].rstrip("/").rsplit("/", 1)[-1]
        if name in ("", "cgroup") or "/" in name:
            name = ",".join(c for c in options if "=" not in c)
        aliases = tuple(c for c in DYNO_CONTROLLERS if c in options and c != name)
        v1.append(CgroupMount("cgroup", ",".join(options), name, aliases))
    if "memory" in seen:
        return v1
    return [CgroupMount("cgroup2", "", "")] if has_v2 else []
