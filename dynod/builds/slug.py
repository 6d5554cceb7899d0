"""Slugs: a built app as one gzip-compressed tarball whose members all live under ``app/``.

A slug is addressed by the sha256 of its bytes, so the same build is stored once and a release
names exactly what it runs. Nothing enters the store unverified: every member is checked
against the rules below before the file is renamed into place, and the same rules run again,
member by member, when a slug is unpacked, so a file changed on disk cannot escape either.

Member rules (one ``UserError`` naming the member on the first break):
- paths are relative, have no ``..`` component and lie under ``app/`` (a leading ``./`` is allowed,
  as ``tar czf slug.tgz ./app`` writes it);
- regular files, directories, symlinks and hard links only: no device nodes, FIFOs or others;
- no setuid/setgid bits (the dyno runs with no_new_privs, but the slug should not ask);
- a relative symlink resolves inside ``app/``; an absolute one may point anywhere: inside a dyno
  it resolves in the dyno's own root (the stack beneath /app), where ``dpkg -x`` (the apt
  buildpack) leaves links such as ``libfoo.so -> /usr/lib/...``. On the host no link from a slug
  is ever followed: packing walks with lstat, unpacking opens every path component with
  O_NOFOLLOW from a directory fd, and nothing else reads an unpacked tree; a hard link names an
  earlier regular file inside ``app/``;
- no member sits beneath a symlink or a file, and no path appears twice (so extraction can
  never be steered through a link);
- the compressed file and the uncompressed content (512 bytes of header per member plus file
  sizes, so a million empty files counts too) each stay within the limit (Heroku: 1 GB).

A slug dynod packs itself from a finished build (``SlugStore.store_directory``) is trusted as far
as ``pack_directory``'s own checks go: the walk that wrote it checked every member, so it is
renamed into the store without being read again, and the build directory itself becomes the
slug's unpacked tree (owner set, ``.git`` and sockets dropped, hard links split) instead of being
unpacked again for the first dyno. Uploaded slugs are read and checked in full, as above.

At import time this module uses only the standard library and ``dynod.procfile``/``dynod.errors``:
dynoctl uses ``pack_directory`` and must start fast. ``isal`` (gzip through Intel's ISA-L, for
packing and reading) and trio (``SlugStore.store_stream``) are imported where they are used.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import NotFound, UserError
from ..procfile import parse_procfile
from .archive import Extractor, member_kind

SLUG_LIMIT = 1 << 30  # Heroku's maximum slug size, 1 GB
PACK_LEVEL = 2  # ISA-L's gzip level (0-3) for packed slugs; see pack_directory
ROOT = "app"
PROCFILE = "app/Procfile"
PROCFILE_LIMIT = 1 << 20  # a Procfile is a few lines; more is a mistake, not a config
STALE_TEMP_SECONDS = 3600.0  # gc removes temp files this old: a store that crashed mid-write
_SLUG_ID = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_MEMBER_HEADER = 512


@dataclass(frozen=True)
class SlugInfo:
    id: str  # sha256 hex of the tarball
    path: Path
    size: int  # bytes of the tarball (compressed)
    process_types: dict[str, str]  # from app/Procfile; {} when there is none


# ---- member rules, shared by pack, verify and unpack ------------------------------------------

class _MemberRules:
    """Checks members in archive order; remembers what came before (links, duplicates, sizes)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.total = 0
        self.kinds: dict[str, str] = {}  # normalized path -> "dir" | "file" | "symlink" | "link"
        self.implicit_dirs: set[str] = set()  # parents seen only through their children so far

    def check(self, member: tarfile.TarInfo) -> str:
        """Return the member's normalized path ("app/..."), or raise UserError saying why not."""
        path = _normalize(member.name, member.name)
        label = member.name
        kind = member_kind(member, label, _bad)
        if path == ROOT and kind != "dir":
            raise _bad(label, "must be the app directory", "put the app's files under app/")
        if path == PROCFILE and kind != "file":
            raise _bad(label, "must be a regular file", "replace the link with the Procfile itself")
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise _bad(label, "has the setuid or setgid bit", "clear it (chmod u-s,g-s)")

        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            parent_kind = self.kinds.get(parent, "dir")
            if parent_kind != "dir":
                raise _bad(label, f"lies beneath {parent}, which is a {parent_kind}",
                           "archive real directories, not links to them")
        if path in self.kinds and not (kind == "dir" and path in self.implicit_dirs):
            raise _bad(label, "appears twice in the archive", "archive each path once")

        if kind == "symlink":
            _check_symlink_target(label, path, member.linkname)
        elif kind == "link":
            target = _normalize(member.linkname, label)
            if self.kinds.get(target) != "file":
                raise _bad(label, f"is a hard link to {member.linkname!r}, which is not an earlier file "
                           "in app/", "archive the file itself")

        self.total += _MEMBER_HEADER + (member.size if kind == "file" else 0)
        if self.total > self.limit_bytes:
            raise UserError(
                f"Slug content is over the {_human(self.limit_bytes)} limit at member {label!r}; "
                "remove unneeded files (list them in .slugignore) and build again.")

        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in self.kinds:
                self.kinds[parent] = "dir"
                self.implicit_dirs.add(parent)
        self.kinds[path] = kind
        self.implicit_dirs.discard(path)
        return path


def _normalize(name: str, label: str) -> str:
    if not name or "\x00" in name:
        raise _bad(label, "has an empty or invalid name", "rebuild the slug with tar")
    if name.startswith("/"):
        raise _bad(label, "is an absolute path", "archive paths relative to the slug root, like app/...")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _bad(label, "has a '..' component", "archive paths without '..'")
    if not parts or parts[0] != ROOT:
        raise _bad(label, "is outside app/", "put every file of the slug under app/")
    return "/".join(parts)


def _check_symlink_target(label: str, path: str, target: str) -> None:
    if not target or "\x00" in target:
        raise _bad(label, "is a symlink with an empty target", "remove it")
    if target.startswith("/"):
        return  # resolved inside the dyno only (see the member rules above)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if not (resolved == ROOT or resolved.startswith(ROOT + "/")):
        raise _bad(label, f"is a symlink to {target!r}, which leaves app/",
                   "point it inside the app, or give its absolute path (/app/... or a stack path)")


def _bad(label: str, what: str, advice: str) -> UserError:
    return UserError(f"Slug member {label!r} {what}; {advice}.")


def _human(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB" if n >= (1 << 20) else f"{n} bytes"


# ---- packing ------------------------------------------------------------------------------

class _HashingWriter:
    """A write-only file object that hashes, counts and limits what passes through it."""

    def __init__(self, out: IO[bytes], limit_bytes: int) -> None:
        self._out = out
        self._limit = limit_bytes
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self._limit:
            raise UserError(f"The compressed slug is over the {_human(self._limit)} limit; remove "
                            "unneeded files (list them in .slugignore) and build again.")
        self.sha.update(data)
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()


def pack_directory(src: Path, dest_dir: Path, *, limit_bytes: int = SLUG_LIMIT) -> SlugInfo:
    """Pack ``src`` as ``app/`` into ``dest_dir/<sha256>.tgz``, byte-for-byte reproducible.

    Members are sorted, owned by 0:0 with no user/group names, keep their modes and mtimes
    (whole seconds); the gzip header carries no name and mtime 0. ``.git`` is skipped. A src
    without a Procfile packs fine (``process_types`` is then {}).
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src} is not a directory; pass the directory holding the app's files.")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    rules = _MemberRules(limit_bytes)
    process_types: dict[str, str] = {}
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-pack-", suffix=".tgz", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            writer = _HashingWriter(out, limit_bytes)
            # ISA-L at its level 2, not zlib at 6: compressing a 40 MB venv drops from ~2.9 s to
            # ~0.3 s for ~13% more bytes, and packing is on every deploy's critical path. The output
            # is plain gzip (any gunzip reads it) and deterministic for the same input.
            from isal import igzip

            with igzip.IGzipFile(filename="", mode="wb", fileobj=writer, mtime=0, compresslevel=PACK_LEVEL) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path, info in _walk_for_pack(src):
                    rules.check(info)
                    if info.isreg():
                        with path.open("rb") as data:
                            if info.name == PROCFILE:
                                process_types = _parse_procfile_bytes(data.read(PROCFILE_LIMIT + 1))
                                data.seek(0)
                            tar.addfile(info, data)
                    else:
                        tar.addfile(info)
            out.flush()
            os.fsync(out.fileno())
        slug_id = writer.sha.hexdigest()
        final = dest_dir / f"{slug_id}.tgz"
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return SlugInfo(id=slug_id, path=final, size=writer.size, process_types=process_types)


def _walk_for_pack(src: Path) -> Iterable[tuple[Path, tarfile.TarInfo]]:
    yield src, _tarinfo(src, ROOT, src.stat())  # src itself may be a link to the app directory
    yield from _walk_dir(src, ROOT)


def _walk_dir(directory: Path, name: str) -> Iterable[tuple[Path, tarfile.TarInfo]]:
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise UserError(f"Cannot read {directory}: {exc.strerror}; fix its permissions.") from None
    for entry in entries:
        if entry == ".git":  # history is not part of the app (Heroku slugs leave it out too)
            continue
        path = directory / entry
        member = f"{name}/{entry}"
        st = path.lstat()
        if stat.S_ISSOCK(st.st_mode):
            continue  # a leftover socket of a dev server: it cannot be archived and means nothing
        info = _tarinfo(path, member, st)
        yield path, info
        if info.isdir():
            yield from _walk_dir(path, member)


def _tarinfo(path: Path, name: str, st: os.stat_result | None = None) -> tarfile.TarInfo:
    st = st or path.lstat()
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    else:
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
    return info  # the rules refuse FIFOs and devices with a message naming the member


def _parse_procfile_bytes(raw: bytes) -> dict[str, str]:
    if len(raw) > PROCFILE_LIMIT:
        raise UserError(f"The Procfile is over {_human(PROCFILE_LIMIT)}; keep one line per process type.")
    try:
        return parse_procfile(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError("The Procfile is not UTF-8 text; save it as UTF-8.") from None


# ---- reading a slug --------------------------------------------------------------------------

def _not_a_slug_errors() -> tuple[type[BaseException], ...]:
    from isal.isal_zlib import error as isal_error

    return (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, isal_error)


def _read_members(path: Path, limit_bytes: int,
                  on_member: Callable[[tarfile.TarInfo, str, IO[bytes] | None], None]) -> None:
    """Stream through the slug at ``path``, checking each member before ``on_member`` sees it."""
    from isal import igzip

    rules = _MemberRules(limit_bytes)
    seen = 0
    not_a_slug = _not_a_slug_errors()
    # A GzipFile (ISA-L's: the same checks as the stdlib's, decompressing ~3x faster), not
    # tarfile's "r|gz": it checks the CRC and the end-of-stream marker, so a truncated upload is
    # refused even when the cut falls in the archive's zero padding.
    with path.open("rb") as raw, igzip.IGzipFile(fileobj=raw, mode="rb") as gz:
        try:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for member in tar:
                    normalized = rules.check(member)
                    data = tar.extractfile(member) if member.isreg() else None
                    on_member(member, normalized, data)
                    seen += 1
            # The rest (padding) must decompress and match the CRC too, and counts toward the
            # limit: gigabytes of zeros after the end-of-archive marker are a bomb, not padding.
            while chunk := gz.read(_CHUNK):
                rules.total += len(chunk)
                if rules.total > limit_bytes:
                    raise UserError(f"Slug content is over the {_human(limit_bytes)} limit after the "
                                    "archive's end; rebuild the slug with tar.")
        except not_a_slug as exc:
            raise UserError(f"The slug is not a gzip-compressed tar archive ({exc}); make one with "
                            "`tar czf slug.tgz app`.") from None
    if seen == 0:
        raise UserError("The slug is an empty archive; it must contain app/ with the app's files.")


def _scan_process_types(path: Path, limit_bytes: int) -> dict[str, str]:
    found: dict[str, str] = {}

    def visit(member: tarfile.TarInfo, normalized: str, data: IO[bytes] | None) -> None:
        if normalized == PROCFILE and data is not None:
            found.update(_parse_procfile_bytes(data.read(PROCFILE_LIMIT + 1)))

    _read_members(path, limit_bytes, visit)
    return found


def _Extractor(root: Path, uid: int, gid: int) -> Extractor:  # noqa: N802 - the class it was
    """Slugs are written by the one extractor for archives from outside (archive.py)."""
    return Extractor(root, uid, gid, what="slug member", advice="check free disk space and rebuild the slug")


def _match_unpacked_tree(root: Path, uid: int, gid: int) -> None:
    """Make a packed directory what unpacking its slug would give: the same entries, owned by uid:gid.

    pack_directory left out ``.git`` and sockets, so they go; a hard-linked file was packed as
    a file of its own, so it gets an inode of its own (a link shared with anything else would let
    a change there reach every dyno of the slug). The rest, the modes and links that the packing
    walk checked, stays as it is.
    """
    pending = [root]
    os.lchown(root, uid, gid)
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as scan:
            entries = list(scan)  # listed first: splitting a hard link adds and renames entries
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if entry.name == ".git" or stat.S_ISSOCK(st.st_mode):
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                continue
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                st = _split_hard_link(entry.path, st)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.lchown(entry.path, uid, gid)
            if stat.S_ISDIR(st.st_mode):
                pending.append(entry.path)


def _split_hard_link(path: str, st: os.stat_result) -> os.stat_result:
    """Replace the hard link at ``path`` with a copy of its content; returns the copy's stat."""
    fd, copy = tempfile.mkstemp(prefix=".dynod-split-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
            shutil.copyfileobj(source, out, _CHUNK)
            out.flush()  # before utime: a later flush would move mtime to now
            os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode))
            os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(copy, path)
    except BaseException:
        Path(copy).unlink(missing_ok=True)
        raise
    return os.lstat(path)


# ---- the store --------------------------------------------------------------------------------

class SlugStore:
    """Verified slugs under ``root`` as <sha256>.tgz (+ <sha256>.json with what was read from it).

    ``unpacked/<sha256>/app`` holds each slug unpacked once, the lower layer of its dynos' overlay.
    Safe to use from several threads; a slug that is refused leaves nothing behind.
    """

    def __init__(self, root: Path, *, limit_bytes: int = SLUG_LIMIT) -> None:
        self.root = Path(root)
        self.limit_bytes = limit_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.unpacked_root = self.root / "unpacked"
        self.unpacked_root.mkdir(exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- taking slugs in

    def store_file(self, path: Path) -> SlugInfo:
        try:
            source = Path(path).open("rb")
        except OSError as exc:
            raise UserError(f"Cannot read slug file {path}: {exc.strerror}; check the path.") from None
        with source:
            fd, tmp = self._new_temp()
            try:
                sha, size = hashlib.sha256(), 0
                with os.fdopen(fd, "wb") as out:
                    while chunk := source.read(_CHUNK):
                        size += len(chunk)
                        self._check_compressed(size)
                        sha.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return self._keep(tmp, sha.hexdigest(), size)

    async def store_stream(self, chunks: AsyncIterator[bytes]) -> SlugInfo:
        import trio  # here, not at the top: dynoctl imports this module and must start fast

        fd, tmp = self._new_temp()
        out = os.fdopen(fd, "wb")
        try:
            sha, size = hashlib.sha256(), 0
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in chunks:
                size += len(chunk)
                self._check_compressed(size)
                sha.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= _CHUNK:  # batch small chunks: one thread hop per MiB
                    await trio.to_thread.run_sync(out.write, b"".join(pending))
                    pending, pending_size = [], 0
            await trio.to_thread.run_sync(_write_and_sync, out, b"".join(pending))
            out.close()
            return await trio.to_thread.run_sync(self._keep, tmp, sha.hexdigest(), size)
        except BaseException:
            out.close()
            tmp.unlink(missing_ok=True)
            raise

    def store_directory(self, src: Path, *, limit_bytes: int | None = None,
                        keep_tree_as: tuple[int, int] | None = None) -> SlugInfo:
        """Pack ``src`` (a finished build's /app) straight into the store.

        Trusted as far as ``pack_directory``'s checks go: the walk that wrote the tarball checked
        every member, so it is renamed in without being read back (no copy, no second pass).
        With ``keep_tree_as=(uid, gid)``, ``src`` itself is then moved in as the slug's unpacked
        tree, owned by uid:gid, so the first dyno does not unpack what was just packed; ``src`` is
        gone afterwards. That needs ``src`` on the store's filesystem and nothing else writing
        in it (the build container has exited); when it cannot be moved it stays where it is and
        the first dyno unpacks the tarball as usual.
        """
        work = Path(tempfile.mkdtemp(prefix=".tmp-pack-", dir=self.root))
        try:
            packed = pack_directory(src, work, limit_bytes=min(limit_bytes or self.limit_bytes, self.limit_bytes))
            final = self._path(packed.id)
            with self._lock_for(packed.id):
                if not final.exists():
                    self._write_meta(packed.id, packed.process_types)
                    os.replace(packed.path, final)
                    _fsync_dir(self.root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if keep_tree_as is not None:
            self._adopt_tree(packed.id, Path(src), *keep_tree_as)
        return SlugInfo(id=packed.id, path=final, size=packed.size, process_types=packed.process_types)

    def _adopt_tree(self, slug_id: str, src: Path, uid: int, gid: int) -> None:
        """Move the directory ``src`` was packed from in as ``unpacked/<sha>/app``, if it can be."""
        final = self.unpacked_root / slug_id
        if not stat.S_ISDIR(src.lstat().st_mode):
            return  # a link to the app directory: moving it would move the link, not the tree
        with self._lock_for(slug_id):
            if final.is_dir():
                return
            work = Path(tempfile.mkdtemp(prefix=f".tmp-{slug_id[:12]}-", dir=self.unpacked_root))
            try:
                os.rename(src, work / ROOT)
            except OSError:  # another filesystem (EXDEV): the first dyno unpacks the tarball
                work.rmdir()
                return
            try:
                _match_unpacked_tree(work / ROOT, uid, gid)
                os.chmod(work, 0o755)
                os.rename(work, final)
            except OSError:
                # The tarball is stored and complete; only the shortcut failed, so the first dyno
                # unpacks it as it would an uploaded slug.
                shutil.rmtree(work, ignore_errors=True)

    def _new_temp(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".tgz", dir=self.root)
        return fd, Path(name)

    def _check_compressed(self, size: int) -> None:
        if size > self.limit_bytes:
            raise UserError(f"The slug is over the {_human(self.limit_bytes)} limit; remove unneeded "
                            "files (list them in .slugignore) and build again.")

    def _keep(self, tmp: Path, slug_id: str, size: int) -> SlugInfo:
        """Verify the temp file, then rename it into place (or drop it if already stored)."""
        final = self._path(slug_id)
        try:
            if final.exists():
                tmp.unlink()
                return self.get(slug_id)
            process_types = _scan_process_types(tmp, self.limit_bytes)
            self._write_meta(slug_id, process_types)
            os.replace(tmp, final)
            _fsync_dir(self.root)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return SlugInfo(id=slug_id, path=final, size=size, process_types=process_types)

    def _write_meta(self, slug_id: str, process_types: dict[str, str]) -> None:
        fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.root)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump({"process_types": process_types}, out, sort_keys=True)
            os.replace(name, self._meta_path(slug_id))
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    # -- reading slugs

    def get(self, slug_id: str) -> SlugInfo:
        path = self._existing(slug_id)
        try:
            process_types = json.loads(self._meta_path(slug_id).read_text())["process_types"]
        except (OSError, ValueError, KeyError):
            # The metadata is a cache of the tarball's own Procfile: rebuild it when missing.
            process_types = _scan_process_types(path, self.limit_bytes)
            self._write_meta(slug_id, process_types)
        return SlugInfo(id=slug_id, path=path, size=path.stat().st_size, process_types=process_types)

    def unpacked(self, slug_id: str, uid: int, gid: int) -> Path:
        """Return ``unpacked/<sha>`` (which contains ``app/`` owned by uid:gid), unpacking once."""
        path = self._existing(slug_id)
        final = self.unpacked_root / slug_id
        with self._lock_for(slug_id):
            if final.is_dir():
                return final
            work = Path(tempfile.mkdtemp(prefix=f".tmp-{slug_id[:12]}-", dir=self.unpacked_root))
            try:
                extractor = _Extractor(work, uid, gid)
                try:
                    _read_members(path, self.limit_bytes, extractor.add)
                    extractor.finish()
                finally:
                    extractor.close()
                os.chmod(work, 0o755)
                try:
                    os.rename(work, final)  # atomic: readers see nothing or the whole tree
                except OSError:
                    if not final.is_dir():  # another process won the race: its copy is as good
                        raise
                    shutil.rmtree(work)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        return final

    def remove(self, slug_id: str) -> None:
        """Remove one stored slug and its unpacked tree (apps:destroy, for slugs no other app uses)."""
        if not _SLUG_ID.match(slug_id):
            return
        with self._lock_for(slug_id):
            self._path(slug_id).unlink(missing_ok=True)
            self._meta_path(slug_id).unlink(missing_ok=True)
            shutil.rmtree(self.unpacked_root / slug_id, ignore_errors=True)

    def gc(self, keep: set[str]) -> list[str]:
        """Remove stored slugs (and their unpacked trees) whose id is not in ``keep``."""
        removed: list[str] = []
        for tarball in sorted(self.root.glob("*.tgz")):
            slug_id = tarball.name.removesuffix(".tgz")
            if not _SLUG_ID.match(slug_id) or slug_id in keep:
                continue
            with self._lock_for(slug_id):
                tarball.unlink(missing_ok=True)
                self._meta_path(slug_id).unlink(missing_ok=True)
                shutil.rmtree(self.unpacked_root / slug_id, ignore_errors=True)
            removed.append(slug_id)
        self._remove_stale_temps()
        return removed

    def _remove_stale_temps(self) -> None:
        cutoff = time.time() - STALE_TEMP_SECONDS
        for directory in (self.root, self.unpacked_root):
            for leftover in directory.glob(".tmp-*"):
                with contextlib.suppress(FileNotFoundError):
                    if leftover.lstat().st_mtime < cutoff:
                        if leftover.is_dir() and not leftover.is_symlink():
                            shutil.rmtree(leftover, ignore_errors=True)
                        else:
                            leftover.unlink()

    # -- paths

    def _path(self, slug_id: str) -> Path:
        return self.root / f"{slug_id}.tgz"

    def _meta_path(self, slug_id: str) -> Path:
        return self.root / f"{slug_id}.json"

    def _existing(self, slug_id: str) -> Path:
        # The id becomes a file name: only a sha256 hex string may get that far.
        if not isinstance(slug_id, str) or not _SLUG_ID.match(slug_id) or not self._path(slug_id).is_file():
            raise NotFound(f"Couldn't find that slug: {slug_id}.")
        return self._path(slug_id)

    def _lock_for(self, slug_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(slug_id, threading.Lock())


def _write_and_sync(out: IO[bytes], data: bytes) -> None:
    out.write(data)
    out.flush()
    os.fsync(out.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
