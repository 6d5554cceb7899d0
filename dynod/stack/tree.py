"""Stack trees on disk: their size, and removing one that a killed debootstrap left mounts in."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from ..errors import UserError
from ..linux import syscalls


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path`` (like ``du -s``: blocks, each hard-linked inode once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total + os.lstat(path).st_blocks * 512


def _unescape_mountinfo(field_text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def mounts_beneath(path: Path, mountinfo: str) -> list[str]:
    """Mount points at or beneath ``path`` in /proc/self/mountinfo text, deepest first."""
    prefix = str(path).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) > 4:
            point = _unescape_mountinfo(parts[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def remove_tree(path: Path) -> None:
    """Delete a (possibly half-built) tree. A debootstrap killed mid-run leaves /proc, /sys or
    device binds mounted inside its target; deleting through them would reach the host's, so
    they are detached first, and the delete is refused if any is still there."""
    if not path.exists():
        return
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for point in mounts_beneath(path.resolve(), mountinfo):
        # Lazy (MNT_DETACH): a busy mount still leaves the tree at once. A mount that will not go
        # (EINVAL: already gone, EPERM) is caught by the check below, which refuses the delete.
        with contextlib.suppress(OSError):
            syscalls.umount2(point, syscalls.MNT_DETACH)
    left = mounts_beneath(path.resolve(), Path("/proc/self/mountinfo").read_text())
    if left:
        raise UserError(f"Cannot remove {path}: {left[0]} is still mounted; unmount it and retry.")
    shutil.rmtree(path)

