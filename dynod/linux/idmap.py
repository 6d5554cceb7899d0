"""Each app's own uid, without re-owning its files: user namespaces for idmapped mounts.

Slugs are unpacked once, owned by the stack's ``dyno`` user (``[dynos] uid``), and shared by every
dyno of the release; build dirs are owned by it too. Each app's processes run as a uid of its own
(``[dynos] uid_first``/``uid_count``, from the ledger), so that one app cannot read another's
kernel keyring or use up another's per-uid limits. An idmapped mount bridges the two: a dyno sees
its slug (and a build its /app and cache) owned by its own uid, and what it writes lands on disk
owned by the stack's user, as before. The mapping lives in a user namespace that no process runs
in: the spawner makes one per app uid, once (a fork and two map writes, ~5 ms), and keeps its fd;
each dyno mounts through it in ~0.1 ms.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import syscalls as sc

if TYPE_CHECKING:
    from ..settings import Settings

IdMap = list[list[int]]  # rows of [id on disk, id seen in the dyno, count], for uids and gids alike


def app_id_map(stack_uid: int, stack_gid: int, app_uid: int, app_gid: int) -> dict[str, IdMap]:
    """Pure: root stays root (the stack's own files), the stack's dyno user becomes the app's."""
    return {"uid": [[0, 0, 1], [stack_uid, app_uid, 1]], "gid": [[0, 0, 1], [stack_gid, app_gid, 1]]}


def map_text(rows: IdMap) -> str:
    """Pure: /proc/PID/uid_map text. Rows are [inside the namespace, outside, count]: inside is the
    id on disk, outside the id the mount shows (the idmapped mount's direction)."""
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in rows)


def make_userns(idmap: dict[str, IdMap]) -> int:
    """A user namespace holding ``idmap``, as an fd; the helper process that made it is gone.

    Needs a single-threaded caller with CAP_SETUID/CAP_SETGID (the spawner): the helper forks,
    unshares a user namespace and waits while the parent writes its maps and opens it.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the helper: no Python cleanup, no return
        try:
            os.close(ready_r)
            os.close(done_w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(done_r, 1)  # EOF: the parent holds the namespace now
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise OSError("the user namespace helper failed to unshare")
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(map_text(idmap["uid"]))
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(map_text(idmap["gid"]))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def idmap_key(idmap: dict[str, IdMap]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(row) for kind in ("uid", "gid") for row in idmap[kind])


def app_identity(settings: Settings, app_uid: int) -> dict[str, Any]:
    """Pure: the spec fields that make a dyno (or build) run as its app's own uid and group."""
    d = settings.dynos
    return {"uid": app_uid, "gid": app_uid,
            "idmap": app_id_map(d.uid, d.gid, app_uid, app_uid) if app_uid != d.uid else None}
