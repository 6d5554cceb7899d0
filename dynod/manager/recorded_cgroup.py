"""Where a dyno's cgroup is, as its ledger record keeps it (``DynoRecord.cgroup``, schema v6).

dynod's cgroup subtree sits beneath the cgroup dynod was started in (``[cgroups] parent`` unset),
so a dynod restarted from another cgroup (``dynod &`` from a shell) has its subtree somewhere
else. Looking an adopted dyno's group up by name under the new subtree finds nothing: the dyno
would run on with no memory supervision (no metrics, no R14/R15) and its group would leak. So the
manager records the group's absolute directories when it makes the dyno, and re-opens them from
the record on adoption; rows written before v6 (``""``) fall back to the lookup by name.

The text is JSON: ``{"v1": {"memory": DIR, "pids": DIR, "cpu": DIR}}`` or ``{"v2": DIR}``. A
record is trusted only as far as it names a group dynod could have made: each directory is an
absolute, normalised path inside the hierarchy of its controller and ends in the dyno's own id.
Anything else (a corrupt or hand-edited row pointing at, say, system.slice) is ignored, so
adoption never signals or removes a group that is not a dyno's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Iterable

from ..linux.cgroups import DynoCgroup, check_name
from ..linux.cgroups.paths import CgroupMounts
from ..linux.cgroups.primer import PRIMER_GROUP
from ..linux.cgroups.v1 import CONTROLLERS, CgroupV1Dyno
from ..linux.cgroups.v2 import CgroupV2Dyno

log = logging.getLogger("dynod.manager")


def describe(group: DynoCgroup) -> str:
    """The record of ``group``'s place: what ``reopen`` reads back."""
    if isinstance(group, CgroupV1Dyno):
        return json.dumps({"v1": dict(sorted(group.dirs.items()))})
    if isinstance(group, CgroupV2Dyno):
        return json.dumps({"v2": group.directory})
    return ""


def recorded_dirs(text: str, dyno_id: str, mounts: CgroupMounts) -> dict[str, str] | None:
    """Pure: the directories a record names ({controller: dir}; v2's one is under "v2"), or None
    when there is no record or it names anything a dyno's group could not be."""
    if not text:
        return None
    try:
        check_name(dyno_id)
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or len(data) != 1:
        return None
    kind, value = next(iter(data.items()))
    if kind == "v1" and "memory" in mounts.v1 and isinstance(value, dict) and "memory" in value:
        wanted = {c: mounts.v1[c].mountpoint for c in value if c in CONTROLLERS and c in mounts.v1}
        if len(wanted) != len(value):
            return None
        dirs = dict(value)
    elif kind == "v2" and "memory" not in mounts.v1 and mounts.v2 is not None:
        wanted, dirs = {"v2": mounts.v2.mountpoint}, {"v2": value}
    else:
        return None
    for controller, directory in dirs.items():
        if not _inside(directory, wanted[controller], dyno_id):
            return None
    return dirs


def _inside(directory: object, mountpoint: str, dyno_id: str) -> bool:
    if not isinstance(directory, str) or "\0" in directory or not directory.startswith("/"):
        return False
    if os.path.normpath(directory) != directory or os.path.basename(directory) != dyno_id:
        return False
    parent = os.path.dirname(directory)
    # Beneath a subtree of dynod's, never a child of the hierarchy's root itself.
    return parent.startswith(mountpoint.rstrip("/") + "/")


def reopen(text: str, dyno_id: str, quota: int, mounts: CgroupMounts,
           resolved: dict[str, bool] | None = None) -> DynoCgroup | None:
    """The dyno's group from its record, or None (no record, a bad one, or the group is gone).

    ``resolved`` caches, across the dynos of one adoption, which parent directories have no
    symbolic link in them (they are the same few subtrees for every dyno)."""
    dirs = recorded_dirs(text, dyno_id, mounts)
    if dirs is None:
        if text:
            log.warning("the ledger's cgroup record of %s is not a dyno's group: ignored (%.200s)", dyno_id, text)
        return None
    present = {c: d for c, d in dirs.items() if _is_real_dir(d, {} if resolved is None else resolved)}
    if "v2" in dirs:
        return CgroupV2Dyno(dyno_id, quota, present["v2"]) if "v2" in present else None
    if "memory" not in present:
        return None
    return CgroupV1Dyno(dyno_id, quota, present)


def _is_real_dir(directory: str, resolved: dict[str, bool]) -> bool:
    """A directory reached through no symbolic link: ``realpath(directory) == directory``, with the
    parent's answer cached (realpath walks every component with lstat: ~40 us a directory, three
    per v1 dyno, on every adoption)."""
    parent = os.path.dirname(directory)
    if parent not in resolved:
        resolved[parent] = os.path.realpath(parent) == parent
    if not resolved[parent]:
        return False
    try:
        return stat.S_ISDIR(os.lstat(directory).st_mode)  # lstat: a link there is not the group
    except OSError:
        return False


def directories(group: DynoCgroup) -> list[str]:
    if isinstance(group, CgroupV1Dyno):
        return list(group.dirs.values())
    if isinstance(group, CgroupV2Dyno):
        return [group.directory]
    return []


def remove_old_subtrees(dirs: Iterable[str], own_roots: Iterable[str], subtree_name: str) -> list[str]:
    """After a dyno's group in another place was removed: remove that place's dynod subtree too
    once it is empty (the last adopted dyno of an earlier dynod went). Only a directory named as
    dynod's subtree, never one of this dynod's own roots; rmdir refuses one that still holds a
    group or a process, so another dyno there is never disturbed. Returns what was removed."""
    roots = set(own_roots)
    removed = []
    for directory in dirs:
        parent = os.path.dirname(directory)
        if parent in roots or os.path.basename(parent) != subtree_name:
            continue
        try:
            # The earlier dynod's move primer (its thread went with it): an empty group, as a
            # dyno's is; rmdir refuses it while a thread is in it.
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(os.path.join(parent, PRIMER_GROUP))
            os.rmdir(parent)
            removed.append(parent)
        except OSError:
            pass  # EBUSY: other groups remain there; ENOENT: already gone
    return removed
