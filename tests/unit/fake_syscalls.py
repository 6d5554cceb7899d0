"""A recording kernel for dynod.linux.syscalls.Syscalls: every call kept with its arguments.

It also keeps a small in-memory tree (directories, files, links, mount points) and refuses what
the kernel would refuse with the kernel's errno: mounting on a missing target, remounting what is
not a mount point, a mkdir over something that exists, pivot_root into a directory that is not a
mount point. So a test of a mount sequence fails when a step is missing or out of order, not only
when the recorded list differs. ``fail`` makes a chosen call fail with a chosen errno.

Paths: host coordinates until ``pivot_root``; after it, absolute paths name the new root.
"""

from __future__ import annotations

import errno
import itertools
import os
import posixpath
from collections.abc import Callable, Iterable
from typing import Any

from dynod.linux import syscalls as sc

Call = tuple[Any, ...]  # (name, *arguments), as the caller passed them

MOUNT_CALLS = ("mount", "umount2", "pivot_root", "idmapped_bind")
QUERIES = ("exists", "isdir")


class RecordingSyscalls:
    def __init__(self, *, dirs: Iterable[str] = (), files: Iterable[str] = (),
                 proc: Iterable[str] = (), proc_dirs: Iterable[str] = ()) -> None:
        """``dirs`` and ``files``: what exists on the host (parents made as needed); ``proc`` and
        ``proc_dirs``: the entries a proc mount shows (files and directories)."""
        self.calls: list[Call] = []
        self.kinds: dict[str, str] = {"/": "dir"}  # host path -> "dir", "file" or "link"
        self.mount_points: list[str] = []
        self.proc = dict.fromkeys(proc, "file") | dict.fromkeys(proc_dirs, "dir")
        self.cwd = "/"  # host path
        self.root = "/"  # host path that "/" names
        self.open_fds: dict[int, str] = {}
        self._fds = itertools.count(100)
        self._failures: list[tuple[Callable[[Call], bool], int]] = []
        for path in dirs:
            self._add_dirs(path)
        for path in files:
            self._add_dirs(posixpath.dirname(path))
            self.kinds[path] = "file"

    # -- for tests ------------------------------------------------------------------------------
    def fail(self, name: str, err: int, **arguments: Any) -> None:
        """Every later call ``name`` whose named arguments equal ``arguments`` fails with ``err``."""
        names = PARAMETERS[name]
        unknown = set(arguments) - set(names)
        if unknown:
            raise TypeError(f"{name} has no argument {sorted(unknown)}")

        def matches(call: Call) -> bool:
            if call[0] != name:
                return False
            given = dict(zip(names, call[1:], strict=True))
            return all(given[key] == value for key, value in arguments.items())

        self._failures.append((matches, err))

    def mounts(self) -> list[Call]:
        """The calls that change what is mounted, in order."""
        return [c for c in self.calls if c[0] in MOUNT_CALLS]

    def changes(self) -> list[Call]:
        """Every call but the queries (exists, isdir), in order."""
        return [c for c in self.calls if c[0] not in QUERIES]

    def host(self, path: str) -> str:
        """The host path that ``path`` names now."""
        if path.startswith("/"):
            return posixpath.normpath(self.root + path) if self.root != "/" else posixpath.normpath(path)
        return posixpath.normpath(posixpath.join(self.cwd, path))

    # -- the interface --------------------------------------------------------------------------
    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int) -> None:
        self._record("setns", fd, nstype)
        if fd not in self.open_fds:
            self._refuse("setns", errno.EBADF)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        self._record("mount", source, target, fstype, flags, data)
        where = self.host(target)
        if where not in self.kinds:
            self._refuse("mount", errno.ENOENT)
        if flags & sc.MS_REMOUNT or fstype is None and source is None:  # propagation or remount
            if flags & sc.MS_REMOUNT and where not in self.mount_points:
                self._refuse("mount", errno.EINVAL)
            return
        if flags & sc.MS_MOVE:
            self._move(self.host(source or ""), where)
            return
        if flags & sc.MS_BIND:
            origin = self.host(source or "")
            if origin not in self.kinds:
                self._refuse("mount", errno.ENOENT)
            if (self.kinds[origin] == "dir") != (self.kinds[where] == "dir"):
                self._refuse("mount", errno.ENOTDIR)
            self._cover(where, self._subtree(origin))
        elif fstype == "proc":
            self._cover(where, self.proc)
        elif fstype == "overlay":
            layers: dict[str, str] = {}
            for layer in reversed(_option(data, "lowerdir").split(":")):  # the top one last: it wins
                layers |= self._subtree(self.host(layer))
            self._cover(where, layers)
        else:  # tmpfs, devpts, cgroup, cgroup2: empty
            self._cover(where, {})

    def umount2(self, target: str, flags: int = 0) -> None:
        self._record("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)
        where = self.host(new_root)
        if where not in self.mount_points or self.kinds.get(where) != "dir":
            self._refuse("pivot_root", errno.EINVAL)
        self.root = where

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def idmapped_bind(self, source: str, target: str, userns_fd: int) -> None:
        self._record("idmapped_bind", source, target, userns_fd)
        if userns_fd not in self.open_fds:
            self._refuse("idmapped_bind", errno.EBADF)
        origin, where = self.host(source), self.host(target)
        if origin not in self.kinds or where not in self.kinds:
            self._refuse("idmapped_bind", errno.ENOENT)
        self._cover(where, self._subtree(origin))

    def chdir(self, path: str) -> None:
        self._record("chdir", path)
        where = self.host(path)
        if self.kinds.get(where) != "dir":
            self._refuse("chdir", errno.ENOENT if where not in self.kinds else errno.ENOTDIR)
        self.cwd = where

    def mkdir(self, path: str) -> None:
        self._record("mkdir", path)
        self._make(path, "dir", "mkdir")

    def makedirs(self, path: str) -> None:
        self._record("makedirs", path)
        where = self.host(path)
        if where in self.kinds and self.kinds[where] != "dir":
            self._refuse("makedirs", errno.EEXIST)
        self._add_dirs(where)

    def create_file(self, path: str) -> None:
        self._record("create_file", path)
        if self.kinds.get(self.host(path)) != "file":
            self._make(path, "file", "create_file")

    def symlink(self, target: str, link: str) -> None:
        self._record("symlink", target, link)
        self._make(link, "link", "symlink")

    def exists(self, path: str) -> bool:
        self._record("exists", path)
        return self.host(path) in self.kinds

    def isdir(self, path: str) -> bool:
        self._record("isdir", path)
        return self.kinds.get(self.host(path)) == "dir"

    def open_readonly(self, path: str) -> int:
        self._record("open_readonly", path)
        fd = next(self._fds)
        self.open_fds[fd] = path
        return fd

    def close(self, fd: int) -> None:
        self._record("close", fd)
        if self.open_fds.pop(fd, None) is None:
            self._refuse("close", errno.EBADF)

    # -- the tree -------------------------------------------------------------------------------
    def _record(self, name: str, *arguments: Any) -> None:
        call = (name, *arguments)
        self.calls.append(call)
        for matches, err in self._failures:
            if matches(call):
                self._refuse(name, err)

    @staticmethod
    def _refuse(name: str, err: int) -> None:
        raise OSError(err, f"{name}: {os.strerror(err)}")

    def _make(self, path: str, kind: str, name: str) -> None:
        where = self.host(path)
        if where in self.kinds:
            self._refuse(name, errno.EEXIST)
        if self.kinds.get(posixpath.dirname(where)) != "dir":
            self._refuse(name, errno.ENOENT)
        self.kinds[where] = kind

    def _add_dirs(self, path: str) -> None:
        while path not in self.kinds:
            self.kinds[path] = "dir"
            path = posixpath.dirname(path)

    def _subtree(self, top: str) -> dict[str, str]:
        """What is under ``top``, relative to it ("" for ``top`` itself)."""
        found = {}
        for path, kind in self.kinds.items():
            if path == top:
                found[""] = kind
            elif path.startswith(top.rstrip("/") + "/"):
                found[path[len(top.rstrip("/")) + 1:]] = kind
        return found

    def _move(self, origin: str, where: str) -> None:
        """MS_MOVE: the mount at ``origin``, with every mount on it, now at ``where``; what it hid
        at ``origin`` is not modelled (an empty directory is left)."""
        if origin not in self.mount_points:
            self._refuse("mount", errno.EINVAL)
        contents = self._subtree(origin)
        below = origin.rstrip("/") + "/"
        for path in [p for p in self.kinds if p.startswith(below)]:
            del self.kinds[path]
        moved = [p for p in self.mount_points if p == origin or p.startswith(below)]
        self.mount_points = [p for p in self.mount_points if p not in moved]
        self._cover(where, contents)
        self.mount_points.remove(where)
        self.mount_points += [where + p[len(origin):] for p in moved]

    def _cover(self, where: str, contents: dict[str, str]) -> None:
        """A mount on ``where``: what was beneath it is hidden, ``contents`` shows instead."""
        below = where.rstrip("/") + "/"
        for path in [p for p in self.kinds if p.startswith(below)]:
            del self.kinds[path]
        for relative, kind in contents.items():
            if relative:
                self.kinds[below + relative] = kind
        self.mount_points.append(where)


def _option(data: str | None, name: str) -> str:
    for option in (data or "").split(","):
        key, _, value = option.partition("=")
        if key == name:
            return value
    raise ValueError(f"no {name}= in {data!r}")


PARAMETERS: dict[str, tuple[str, ...]] = {
    "unshare": ("flags",), "setns": ("fd", "nstype"),
    "mount": ("source", "target", "fstype", "flags", "data"), "umount2": ("target", "flags"),
    "pivot_root": ("new_root", "put_old"), "sethostname": ("name",),
    "idmapped_bind": ("source", "target", "userns_fd"), "chdir": ("path",), "mkdir": ("path",),
    "makedirs": ("path",), "create_file": ("path",), "symlink": ("target", "link"),
    "exists": ("path",), "isdir": ("path",), "open_readonly": ("path",), "close": ("fd",),
}
