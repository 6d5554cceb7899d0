"""Archives from outside, unpacked on the host without trusting a byte of them.

dynod runs as root, and source tarballs (``dynoctl deploy``, ``git push``, the Platform API's
builds) and uploaded slugs are written by whoever holds the API. Python 3.11.2's tarfile has no
extraction filters, and a check of names alone is not enough: a symlink ``x -> /etc/cron.d/y``
followed by a regular file ``x`` makes a naive extractor write through the link as root. So every
archive from outside is written by ``Extractor``, which never resolves a path on the host:

- each directory is opened component by component with ``O_NOFOLLOW|O_DIRECTORY`` from a file
  descriptor of the destination, and every entry is made relative to its parent's descriptor;
- regular files are created with ``O_CREAT|O_EXCL|O_NOFOLLOW``: never an existing file, never
  through a link;
- hard links resolve their target through the same directory descriptors, without following a
  link, so they can only name a file the archive itself wrote;
- ownership goes to the build or dyno uid, with ``fchown`` on what was opened, not on a path.

The member rules (which types, which names, how big) are checked before the extractor sees a
member; ``SourceRules`` here is the set for source archives, ``slug._MemberRules`` the stricter
set for slugs. The extractor still refuses to write through a link even if a rule were missed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..errors import UserError

SOURCE_LIMIT = 2 * 1024 * 1024 * 1024  # what a source archive may unpack to
# Deeper than any app's tree (node_modules included); a member 2,000 levels deep would make a
# tree that Python 3.11's recursive shutil.rmtree and os.walk cannot remove or walk.
MAX_DEPTH = 256
MEMBER_HEADER = 512  # each member costs a header's worth, so a million empty files count too
_CHUNK = 1 << 20


class Extractor:
    """Writes checked members below ``root`` through directory fds, never following a link."""

    def __init__(self, root: Path, uid: int, gid: int, *,
                 file_mode: Callable[[tarfile.TarInfo], int] | None = None,
                 dir_mode: Callable[[tarfile.TarInfo], int] | None = None,
                 what: str = "archive member", advice: str = "check free disk space and try again") -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self.uid = uid
        self.gid = gid
        self._file_mode = file_mode or (lambda m: stat.S_IMODE(m.mode))
        self._dir_mode = dir_mode or (lambda m: stat.S_IMODE(m.mode))
        self._what = what
        self._advice = advice
        # path -> (mode, mtime or None for a parent the archive never listed), applied at the end
        self.dirs: dict[str, tuple[int, int | None]] = {}
        # The last member's parent, kept open: members come sorted, so most share it, and opening
        # the path component by component for each of thousands of files was most of an unpack.
        self._parent: tuple[str, int] | None = None

    def close(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None
        os.close(self.root_fd)

    def _parent_fd(self, parts: list[str]) -> int:
        key = "/".join(parts)
        if self._parent is None or self._parent[0] != key:
            fd = self._open_dir(parts, create=True)
            if self._parent is not None:
                os.close(self._parent[1])
            self._parent = (key, fd)
        return self._parent[1]

    def _open_dir(self, parts: list[str], *, create: bool) -> int:
        fd = os.dup(self.root_fd)
        try:
            for depth, part in enumerate(parts, start=1):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                        os.chown(part, self.uid, self.gid, dir_fd=fd, follow_symlinks=False)
                        self.dirs.setdefault("/".join(parts[:depth]), (0o755, None))
                # O_NOFOLLOW: a symlink where a directory should be fails with ELOOP/ENOTDIR
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def add(self, member: tarfile.TarInfo, normalized: str, data: IO[bytes] | None) -> None:
        """Write one member at ``normalized`` (a relative path of plain components)."""
        parts = normalized.split("/")
        if len(parts) > MAX_DEPTH:
            raise UserError(f"The {self._what} {_shown(member.name)!r} lies {len(parts)} directories deep; "
                            f"archives may nest at most {MAX_DEPTH}.")
        try:
            self._add_in(self._parent_fd(parts[:-1]), parts[-1], member, data)
        except OSError as exc:
            raise UserError(f"Cannot unpack {self._what} {_shown(member.name)!r}: {exc.strerror}; "
                            f"{self._advice}.") from None
        if member.isdir():
            self.dirs[normalized] = (self._dir_mode(member), int(member.mtime))

    def _add_in(self, parent: int, name: str, member: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        if member.isdir():
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                # Only a directory made earlier by this extractor can be here (rules refuse
                # duplicates); a link in its place is refused, never followed.
                if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise
        elif member.isreg():
            assert data is not None
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(data, out, _CHUNK)
                out.flush()  # before utime: a later flush would move mtime to now
                os.fchown(out.fileno(), self.uid, self.gid)
                os.fchmod(out.fileno(), self._file_mode(member) & 0o777)
                os.utime(out.fileno(), (member.mtime, member.mtime))
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent)
            os.chown(name, self.uid, self.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)
        elif member.islnk():
            target = [p for p in member.linkname.split("/") if p not in ("", ".")]
            source_dir = self._open_dir(target[:-1], create=False)
            try:
                # follow_symlinks=False: a link to a symlink links the symlink, never what it names
                os.link(target[-1], name, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(source_dir)
        else:  # the rules let only the four kinds above through
            raise OSError(0, "unsupported member type")

    def finish(self) -> None:
        # Deepest first, so setting a directory's mtime comes after every change inside it.
        for path in sorted(self.dirs, key=lambda p: p.count("/"), reverse=True):
            mode, mtime = self.dirs[path]
            fd = self._open_dir(path.split("/"), create=False)
            try:
                os.fchown(fd, self.uid, self.gid)
                os.fchmod(fd, mode & 0o777)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


class MemberTree:
    """The paths an archive has shown so far, checked in archive order: shared by the source rules
    here and the slug rules (dynod.builds.slug), which differ only in names, limits and links.

    ``kinds``: normalized path -> "dir" | "file" | "symlink" | "link"; ``implicit_dirs``: parents
    seen only through their children so far (their own entry may still come, once)."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.implicit_dirs: set[str] = set()

    def check_place(self, member: tarfile.TarInfo, path: str, kind: str, label: str,
                    bad: Callable[[str, str, str], UserError]) -> None:
        """No setuid/setgid bit, nothing beneath a link or a file, no path twice (UserError via ``bad``)."""
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise bad(label, "has the setuid or setgid bit", "clear it (chmod u-s,g-s)")
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            parent_kind = self.kinds.get(parent, "dir")
            if parent_kind != "dir":
                raise bad(label, f"lies beneath {parent}, which is a {parent_kind}",
                          "archive real directories, not links to them")
        if path in self.kinds and not (kind == "dir" and path in self.implicit_dirs):
            raise bad(label, "appears twice in the archive", "archive each path once")

    def add(self, path: str, kind: str) -> None:
        """Remember an accepted member (and its parents, as directories seen through it)."""
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in self.kinds:
                self.kinds[parent] = "dir"
                self.implicit_dirs.add(parent)
        self.kinds[path] = kind
        self.implicit_dirs.discard(path)


class SourceRules:
    """What a source archive may hold: an app's files as ``git archive`` or ``tar`` writes them.

    Relative names without ``..``; regular files, directories, symlinks (to anything: they are
    written, never followed, on the host) and hard links to an earlier file of the archive; no
    device nodes, FIFOs, setuid or setgid bits; no path twice and none beneath a symlink or a
    file; the content (file sizes plus a header per member) within ``limit_bytes``.
    """

    def __init__(self, limit_bytes: int = SOURCE_LIMIT) -> None:
        self.limit_bytes = limit_bytes
        self.total = 0
        self.tree = MemberTree()

    def check(self, member: tarfile.TarInfo) -> str | None:
        """The member's normalized path, None for the archive's root entry, or UserError."""
        label = member.name
        path = source_name(label)
        if path is None:
            if not member.isdir():
                raise _bad(label, "names the archive's root but is not a directory",
                           "archive the app's directory")
            return None
        kind = member_kind(member, label, _bad)
        self.tree.check_place(member, path, kind, label, _bad)
        if kind == "symlink" and (not member.linkname or "\x00" in member.linkname):
            raise _bad(label, "is a symlink with an empty target", "remove it")
        if kind == "link":
            target = source_name(member.linkname)
            if target is None or self.tree.kinds.get(target) != "file":
                raise _bad(label, f"is a hard link to {member.linkname!r}, which is not an earlier "
                           "file of the archive", "archive the file itself")
        self.total += MEMBER_HEADER + (member.size if kind == "file" else 0)
        if self.total > self.limit_bytes:
            raise UserError(f"The source archive unpacks to more than {_human(self.limit_bytes)} "
                            f"(at {_shown(label)!r}); leave large files out of it.")
        self.tree.add(path, kind)
        return path


def source_name(name: str) -> str | None:
    """``./a//b`` -> ``a/b``; None for the root itself; UserError for absolute or ``..`` names."""
    if not name or "\x00" in name:
        raise _bad(name, "has an empty or invalid name", "archive the app again with tar")
    if name.startswith("/"):
        raise _bad(name, "is an absolute path", "archive the app's directory with relative paths")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _bad(name, "has a '..' component", "archive the app's directory with relative paths")
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in parts):
        raise _bad(name, "has a name over 255 bytes, longer than a file name can be", "shorten it")
    return "/".join(parts) or None


def unpack_source(archive: IO[bytes], dest: Path, *, uid: int, gid: int,
                  limit_bytes: int = SOURCE_LIMIT) -> None:
    """Extract a source tarball (tar or tar.gz) into the empty directory ``dest``, owned by uid:gid.

    On the first member that breaks a rule, a UserError names it; what was written so far stays
    inside ``dest`` (the caller removes the build directory).
    """
    rules = SourceRules(limit_bytes)
    extractor = Extractor(
        dest, uid, gid,
        # Source files keep only their executable bit, as git records modes (644 or 755).
        file_mode=lambda m: 0o755 if m.mode & 0o111 else 0o644, dir_mode=lambda m: 0o755,
        what="source archive member", advice="check free disk space and deploy again")
    try:
        with tarfile.open(fileobj=archive, mode="r|*") as tar:
            for member in tar:
                path = rules.check(member)
                if path is None:
                    continue
                data = tar.extractfile(member) if member.isreg() else None
                extractor.add(member, path, data)
        extractor.finish()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise UserError(f"The source is not a readable tar archive ({exc}); send a .tar or .tar.gz.") from None
    finally:
        extractor.close()
    os.lchown(dest, uid, gid)


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it, without following links and without recursion.

    A tree a build made can nest deeper than Python's stack (3.11's shutil.rmtree recurses, and
    raises RecursionError past ~1,000 levels) and hold more levels than there are file
    descriptors to keep open: so one directory is open at a time, the way down is remembered by
    name and the way up is "..". Each directory is listed once. Only for trees nothing else is
    changing (no build runs in them any more).
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    except OSError:  # a file or a link where the tree was: remove just that
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    names: list[str] = []  # from path down to the directory fd is open on
    waiting: list[list[str]] = []  # per level above: the subdirectories not removed yet
    try:
        pending = _unlink_files(fd)
        while True:
            if pending:
                child = pending.pop()
                next_fd = os.open(child, flags, dir_fd=fd)
                os.close(fd)
                fd = next_fd
                names.append(child)
                waiting.append(pending)
                pending = _unlink_files(fd)
                continue
            if not names:
                break
            parent = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
            pending = waiting.pop()
    finally:
        os.close(fd)
    os.rmdir(path)


def _unlink_files(fd: int) -> list[str]:
    """Unlink every non-directory in the directory ``fd``; return its subdirectories' names."""
    subdirectories = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirectories.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirectories


def member_kind(member: tarfile.TarInfo, label: str, bad: Callable[[str, str, str], UserError]) -> str:
    """"dir", "file", "symlink" or "link"; any other kind (devices, FIFOs, ...) is refused with
    ``bad(label, what, advice)``, the caller's own error line (source archive or slug)."""
    if member.isdir():
        return "dir"
    if member.isreg():
        return "file"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "link"
    if member.ischr() or member.isblk():
        raise bad(label, "is a device node", "remove it from the app")
    if member.isfifo():
        raise bad(label, "is a FIFO", "remove it from the app")
    raise bad(label, f"has an unsupported type ({member.type!r})", "keep only files, directories and links")


def _bad(label: str, what: str, advice: str) -> UserError:
    return UserError(f"Source archive member {_shown(label)!r} {what}; {advice}.")


def _shown(name: str) -> str:
    """A member name as an error line shows it: a name can be kilobytes long."""
    return name if len(name) <= 120 else name[:117] + "..."


def _human(n: int) -> str:
    return f"{n / (1 << 30):.0f} GB" if n >= (1 << 30) else (
        f"{n / (1 << 20):.0f} MB" if n >= (1 << 20) else f"{n} bytes")
