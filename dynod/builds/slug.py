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

This module is the format alone: pack a directory (``pack_directory``), read and check a slug
(``read_members``, ``scan_process_types``), unpack one (``unpack_slug``). Where slugs are kept
is the server's business (``slug_store.SlugStore``).

At import time it uses only the standard library and ``dynod.procfile``/``dynod.errors``/
``dynod.builds.archive`` (``tests/unit/test_slug.py`` checks): dynoctl packs slugs with it and
must start fast, without the daemon. ``isal`` (gzip through Intel's ISA-L) is imported by the
calls that pack and read, where it is used.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import re
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import UserError
from ..procfile import parse_procfile
from .archive import Extractor, MemberTree, member_kind

SLUG_LIMIT = 1 << 30  # Heroku's maximum slug size, 1 GB
PACK_LEVEL = 2  # ISA-L's gzip level (0-3) for packed slugs; see pack_directory
ROOT = "app"
PROCFILE = "app/Procfile"
PROCFILE_LIMIT = 1 << 20  # a Procfile is a few lines; more is a mistake, not a config
_SLUG_ID = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_MEMBER_HEADER = 512


def is_slug_id(value: object) -> bool:
    """Whether ``value`` has a slug id's shape (sha256 hex), the only shape that may become a file name."""
    return isinstance(value, str) and bool(_SLUG_ID.match(value))


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
        self.tree = MemberTree()

    def check(self, member: tarfile.TarInfo) -> str:
        """Return the member's normalized path ("app/..."), or raise UserError saying why not."""
        path = _normalize(member.name, member.name)
        label = member.name
        kind = member_kind(member, label, _bad)
        if path == ROOT and kind != "dir":
            raise _bad(label, "must be the app directory", "put the app's files under app/")
        if path == PROCFILE and kind != "file":
            raise _bad(label, "must be a regular file", "replace the link with the Procfile itself")
        self.tree.check_place(member, path, kind, label, _bad)

        if kind == "symlink":
            _check_symlink_target(label, path, member.linkname)
        elif kind == "link":
            target = _normalize(member.linkname, label)
            if self.tree.kinds.get(target) != "file":
                raise _bad(label, f"is a hard link to {member.linkname!r}, which is not an earlier file "
                           "in app/", "archive the file itself")

        self.total += _MEMBER_HEADER + (member.size if kind == "file" else 0)
        if self.total > self.limit_bytes:
            raise UserError(
                f"Slug content is over the {human_size(self.limit_bytes)} limit at member {label!r}; "
                "remove unneeded files (list them in .slugignore) and build again.")

        self.tree.add(path, kind)
        return path

    def check_walked(self, name: str, path: str, st: os.stat_result) -> None:
        """``check`` for a member of the tree ``pack_slug`` walks (``name`` "app/...", ``path`` on
        the host, ``st`` its lstat), raising the same UserError for what ``check`` refuses.

        What the walk itself guarantees is not checked again: its names are directory entries
        joined under app/ (no empty, ".", ".." or absolute part, each path once), it descends only
        into real directories (nothing lies beneath a link or a file), and tar stores hard links
        as files (--hard-dereference). What is left is checked from the lstat: ~3x less Python per
        member than building a TarInfo and walking the tree rules for it (a venv has thousands).
        """
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            kind = "dir"
        elif stat.S_ISREG(mode):
            kind = "file"
        elif stat.S_ISLNK(mode):
            kind = "symlink"
        elif stat.S_ISFIFO(mode):
            raise _bad(name, "is a FIFO", "remove it from the app")
        else:  # sockets were skipped by the walk: what is left is a device
            raise _bad(name, "is a device node", "remove it from the app")
        if name == ROOT and kind != "dir":
            raise _bad(name, "must be the app directory", "put the app's files under app/")
        if name == PROCFILE and kind != "file":
            raise _bad(name, "must be a regular file", "replace the link with the Procfile itself")
        if mode & (stat.S_ISUID | stat.S_ISGID):
            raise _bad(name, "has the setuid or setgid bit", "clear it (chmod u-s,g-s)")
        if kind == "symlink":
            _check_symlink_target(name, name, os.readlink(path))
        self.total += _MEMBER_HEADER + (st.st_size if kind == "file" else 0)
        if self.total > self.limit_bytes:
            raise UserError(
                f"Slug content is over the {human_size(self.limit_bytes)} limit at member {name!r}; "
                "remove unneeded files (list them in .slugignore) and build again.")


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


def human_size(n: int) -> str:
    """A limit as a user reads it: "1024 MB", "512 bytes"."""
    return f"{n / (1 << 20):.0f} MB" if n >= (1 << 20) else f"{n} bytes"


# ---- packing ------------------------------------------------------------------------------

# Every this many bytes written, the pack starts the disk on them (sync_file_range) rather than
# leaving all of a slug to its fsync: the disk writes while the rest is packed.
WRITEBACK_EVERY = 4 << 20


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    # Imported here, not at the top: dynoctl imports this module to pack slugs, and its start
    # must not load dynod's Linux layer; a pack loads it once it has 4 MiB to write back.
    from ..linux.syscalls import start_writeback as sync_file_range_write

    sync_file_range_write(fd, offset, nbytes)


class _HashingWriter:
    """A write-only file object that hashes, counts and limits what passes through it; with
    ``writeback``, it also starts the disk on each WRITEBACK_EVERY bytes as they are written."""

    def __init__(self, out: IO[bytes], limit_bytes: int, *, writeback: bool = False) -> None:
        self._out = out
        self._limit = limit_bytes
        self.sha = hashlib.sha256()
        self.size = 0
        self._writeback = writeback
        self._written_back = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self._limit:
            raise UserError(f"The compressed slug is over the {human_size(self._limit)} limit; remove "
                            "unneeded files (list them in .slugignore) and build again.")
        self.sha.update(data)
        written = self._out.write(data)
        if self._writeback and self.size - self._written_back >= WRITEBACK_EVERY:
            self._out.flush()
            try:
                start_writeback(self._out.fileno(), self._written_back, self.size - self._written_back)
            except OSError:  # a filesystem that cannot: the fsync at the end writes it all, as before
                self._writeback = False
            self._written_back = self.size
        return written

    def flush(self) -> None:
        self._out.flush()


def pack_directory(src: Path, dest_dir: Path, *, limit_bytes: int = SLUG_LIMIT) -> SlugInfo:
    """Pack ``src`` as ``app/`` into ``dest_dir/<sha256>.tgz``, byte-for-byte reproducible.

    Members are sorted, owned by 0:0 with no user/group names, keep their modes and mtimes
    (whole seconds); the gzip header carries no name and mtime 0. ``.git`` is skipped. A src
    without a Procfile packs fine (``process_types`` is then {}).
    """
    return pack_slug(src, dest_dir, limit_bytes=limit_bytes)[0]


@dataclass(frozen=True)
class PackedBlock:
    """One compressed block of a packed slug: where its bytes are in the file, and what they hold."""
    digest: str  # BLAKE3 hex (block_digest) of the BLOCK_SIZE bytes of tar it compresses
    offset: int  # in the slug file
    length: int  # compressed bytes


# Changing any of these changes every slug's bytes or what its blocks are known by: a block packed
# under another format is never reused (block_format() names them, with the compressor's version,
# in every block index).
BLOCK_SIZE = 1 << 20
BLOCK_FORMAT = f"deflate-blocks-v1 size={BLOCK_SIZE} isal-level={PACK_LEVEL} digest=blake3"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown
# PAX, as the slug format says, without what would differ between two packs of one tree: the
# extended headers' names carry no PID, and no atime, ctime or sub-second mtime is recorded.
_TAR = ("tar", "--create", "--file=-", f"--blocking-factor={BLOCK_SIZE // 512}", "--format=pax",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime,delete=mtime",
        "--sort=name", "--numeric-owner", "--owner=0", "--group=0", "--hard-dereference",
        "--exclude=.git", "--transform=s,^\\.,app,S")  # S: symlink targets stay as they are


def block_digest(block: bytes) -> str:
    """What a block of tar is known by in a block index: its BLAKE3 (256 bits, hex).

    A warm pack hashes every block of its tar to find the ones an earlier slug holds compressed;
    BLAKE3 takes a third of sha256's time for them (~8 against ~21 ms for 37 MiB on this host's
    SHA-NI). It is a cryptographic hash like sha256, so a block reused for its digest is the same
    bytes. The slug's id stays the sha256 of the whole file, as Heroku's checksum is.
    """
    from blake3 import blake3

    return blake3(block).hexdigest()


def block_format() -> str:
    """The packing format with the compressor's version: blocks are reused only under an equal one."""
    from isal import __version__ as isal_version

    return f"{BLOCK_FORMAT} isal={isal_version}"


# How far GNU tar may write ahead of the reader. The packing thread walks the tree with the slug
# rules before it reads a byte of tar's output; with a 1 MiB pipe tar stopped after 1 MiB and
# waited for the walk, with 64 MiB it reads and writes a venv's files meanwhile on the other core.
# The pipe's pages are allocated only as tar fills them. Over the host's pipe-max-size a process
# without CAP_SYS_RESOURCE is refused it, and then gets one block's worth.
PIPE_AHEAD_BYTES = 64 << 20


@dataclass(frozen=True)
class CheckedTree:
    """A build's tree as the slug rules saw it (``check_tree``), before anything in it changed."""
    members: list[tuple[str, os.stat_result]]  # (host path, lstat) of each member pack_slug writes
    dropped: list[tuple[str, os.stat_result]]  # ``.git`` and sockets, which no slug holds
    process_types: dict[str, str]


def check_tree(src: Path, *, limit_bytes: int = SLUG_LIMIT) -> CheckedTree:
    """Walk ``src`` as pack_slug does and check every member against the slug rules (one
    UserError naming the first that breaks one), changing nothing: a tree that passes packs.

    This is what lets a build's tree serve before its slug exists (docs/builds.md, early boot):
    the dynos that boot from it run nothing the slug rules would refuse.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src} is not a directory; pass the directory holding the app's files.")
    rules = _MemberRules(limit_bytes)
    members: list[tuple[str, os.stat_result]] = []
    dropped: list[tuple[str, os.stat_result]] = []
    process_types: dict[str, str] = {}
    for path, name, st in _walk_for_pack(src, dropped):
        rules.check_walked(name, path, st)
        members.append((path, st))
        if name == PROCFILE:
            process_types = _read_procfile(path)
    return CheckedTree(members, dropped, process_types)


def _read_procfile(path: str) -> dict[str, str]:
    with open(path, "rb") as data:  # a regular file: check_walked refused anything else
        return _parse_procfile_bytes(data.read(PROCFILE_LIMIT + 1))


def pack_slug(src: Path, dest_dir: Path, *, limit_bytes: int = SLUG_LIMIT,
              reuse: Callable[[str], bytes | None] | None = None,
              checked: CheckedTree | None = None) -> tuple[SlugInfo, list[PackedBlock]]:
    """``pack_directory``, also returning the slug's blocks, and taking compressed blocks from
    ``reuse`` (digest -> bytes of an earlier slug packed under ``block_format()``) where it has them.

    The tar is written by GNU tar (C: a 40 MB venv in ~0.03 s, where Python's tarfile took ~0.2 s)
    and cut at fixed BLOCK_SIZE offsets; each block is deflated on its own (no dictionary from the
    one before), all but the last ending on a full flush, so the blocks join into one plain gzip
    member. The bytes are a function of the tree alone: a reused block is byte for byte what
    compressing it again would give, so reuse only saves time (a warm build's unchanged venv: every
    block but the first and the last few). While tar starts, this thread walks the same tree and
    checks every member against the slug rules; the build has exited, so nothing changes the tree
    between the walk and tar's read of it. With ``checked`` (check_tree's walk of this tree, made
    since the build exited) that walk is not made again.
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
            writer = _HashingWriter(out, limit_bytes, writeback=True)
            with _BlockPacker(src, writer, reuse) as packer:
                if checked is not None:
                    process_types = checked.process_types
                else:
                    for path, name, st in _walk_for_pack(src):
                        rules.check_walked(name, path, st)
                        if name == PROCFILE:
                            process_types = _read_procfile(path)
                packer.pack()
            out.flush()
            os.fsync(out.fileno())
        slug_id = writer.sha.hexdigest()
        final = dest_dir / f"{slug_id}.tgz"
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    info = SlugInfo(id=slug_id, path=final, size=writer.size, process_types=process_types)
    return info, packer.blocks


class _BlockPacker:
    """GNU tar over ``src``, cut into blocks, deflated into ``writer``.

    tar starts first and runs in its own process while the caller walks the tree; the blocks are
    then read and packed on the caller's thread. (Reading them on a second thread during the walk
    was slower: each handover of the GIL between the walk and the reader waits out Python's 5 ms
    switch interval.)
    """

    def __init__(self, src: Path, writer: _HashingWriter, reuse: Callable[[str], bytes | None] | None) -> None:
        import subprocess

        self._writer = writer
        self._reuse = reuse
        self.blocks: list[PackedBlock] = []
        self._stderr = tempfile.TemporaryFile()
        read_end, write_end = os.pipe()
        try:
            import fcntl

            for ahead in (PIPE_AHEAD_BYTES, BLOCK_SIZE):  # a bigger pipe: tar runs further ahead; not required
                try:
                    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, ahead)
                    break
                except OSError:
                    continue
            self._tar = subprocess.Popen([*_TAR, f"--directory={src}", "."], stdin=subprocess.DEVNULL,
                                         stdout=write_end, stderr=self._stderr,
                                         env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
        except OSError as exc:
            os.close(read_end)
            self._stderr.close()
            raise UserError(f"Cannot run GNU tar to pack the slug ({exc.strerror}); install tar.") from None
        finally:
            os.close(write_end)
        self._pipe = os.fdopen(read_end, "rb", buffering=0)

    def __enter__(self) -> _BlockPacker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tar.poll() is None:  # the walk refused a member: stop tar
            self._tar.kill()
        self._pipe.close()
        self._tar.wait()
        self._stderr.close()

    def pack(self) -> None:
        """Read tar's output to its end and write the gzip stream; raise tar's own message on failure."""
        from isal import isal_zlib

        writer, crc, total = self._writer, 0, 0
        writer.write(_GZIP_HEADER)
        held: bytes | None = None  # the last block is known only at the end: it finishes the stream
        while block := _read_full(self._pipe, BLOCK_SIZE):
            if held is not None:
                self._add(held, block_digest(held), last=False)
            crc = isal_zlib.crc32(block, crc)
            total += len(block)
            held = block
        code = self._tar.wait()
        if code != 0 or held is None:
            self._stderr.seek(0)
            said = self._stderr.read(4096).decode("utf-8", "replace").strip().splitlines()
            raise UserError(f"Packing the slug failed: {said[-1] if said else f'tar exited with {code}'}; "
                            "check the build's files and free disk space, then build again.")
        self._add(held, "", last=True)
        writer.write(crc.to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little"))

    def _add(self, block: bytes, digest: str, *, last: bool) -> None:
        from isal import isal_zlib

        if last:  # ends the deflate stream, so it is never one an unfinished slug could reuse
            compressor = isal_zlib.compressobj(PACK_LEVEL, isal_zlib.DEFLATED, -15)
            self._writer.write(compressor.compress(block) + compressor.flush(isal_zlib.Z_FINISH))
            return
        data = self._reuse(digest) if self._reuse is not None else None
        if data is None:
            compressor = isal_zlib.compressobj(PACK_LEVEL, isal_zlib.DEFLATED, -15)
            data = compressor.compress(block) + compressor.flush(isal_zlib.Z_FULL_FLUSH)
        self.blocks.append(PackedBlock(digest, self._writer.size, len(data)))
        self._writer.write(data)


def _read_full(pipe: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end: a pipe hands them over in pieces."""
    pieces, got = [], 0
    while got < size and (piece := pipe.read(size - got)):
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def _walk_for_pack(src: Path, dropped: list[tuple[str, os.stat_result]] | None = None,
                   ) -> Iterable[tuple[str, str, os.stat_result]]:
    """(host path, member name, lstat) of each member tar will write, in tar's order; what it
    leaves out (``.git``, sockets) goes to ``dropped`` as (host path, lstat) when given."""
    yield str(src), ROOT, src.stat()  # src itself may be a link to the app directory
    yield from _walk_dir(str(src), ROOT, dropped)


def _walk_dir(directory: str, name: str, dropped: list[tuple[str, os.stat_result]] | None,
              ) -> Iterable[tuple[str, str, os.stat_result]]:
    # Plain strings and scandir, not pathlib: a venv has thousands of members, and building a
    # Path per member was a third of this walk's time.
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=_entry_name)
    except OSError as exc:
        raise UserError(f"Cannot read {directory}: {exc.strerror}; fix its permissions.") from None
    for entry in entries:
        if entry.name == ".git":  # history is not part of the app (Heroku slugs leave it out too)
            if dropped is not None:
                dropped.append((entry.path, entry.stat(follow_symlinks=False)))
            continue
        member = f"{name}/{entry.name}"
        st = entry.stat(follow_symlinks=False)  # an lstat: DirEntry keeps no stat on Linux
        if stat.S_ISSOCK(st.st_mode):
            if dropped is not None:  # a leftover socket of a dev server: it cannot be archived
                dropped.append((entry.path, st))
            continue
        yield entry.path, member, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(entry.path, member, dropped)


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _parse_procfile_bytes(raw: bytes) -> dict[str, str]:
    if len(raw) > PROCFILE_LIMIT:
        raise UserError(f"The Procfile is over {human_size(PROCFILE_LIMIT)}; keep one line per process type.")
    try:
        return parse_procfile(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError("The Procfile is not UTF-8 text; save it as UTF-8.") from None


# ---- reading a slug --------------------------------------------------------------------------

def _not_a_slug_errors() -> tuple[type[BaseException], ...]:
    from isal.isal_zlib import error as isal_error

    return (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, isal_error)


def read_members(path: Path, limit_bytes: int,
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
                    raise UserError(f"Slug content is over the {human_size(limit_bytes)} limit after the "
                                    "archive's end; rebuild the slug with tar.")
        except not_a_slug as exc:
            raise UserError(f"The slug is not a gzip-compressed tar archive ({exc}); make one with "
                            "`tar czf slug.tgz app`.") from None
    if seen == 0:
        raise UserError("The slug is an empty archive; it must contain app/ with the app's files.")


def scan_process_types(path: Path, limit_bytes: int = SLUG_LIMIT) -> dict[str, str]:
    """The process types the slug's app/Procfile declares ({} without one), checking every member."""
    found: dict[str, str] = {}

    def visit(member: tarfile.TarInfo, normalized: str, data: IO[bytes] | None) -> None:
        if normalized == PROCFILE and data is not None:
            found.update(_parse_procfile_bytes(data.read(PROCFILE_LIMIT + 1)))

    read_members(path, limit_bytes, visit)
    return found


def unpack_slug(path: Path, dest: Path, uid: int, gid: int, *, limit_bytes: int = SLUG_LIMIT) -> None:
    """Unpack the slug at ``path`` into the empty directory ``dest`` (which gets ``app/``), owned by
    uid:gid, checking each member by the rules above before the one extractor for archives from
    outside (archive.py) writes it."""
    extractor = Extractor(dest, uid, gid, what="slug member", advice="check free disk space and rebuild the slug")
    try:
        read_members(path, limit_bytes, extractor.add)
        extractor.finish()
    finally:
        extractor.close()
