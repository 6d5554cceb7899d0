"""The slug store: the server's verified slugs, addressed by the sha256 of their bytes.

Nothing enters the store unverified: an uploaded slug is written to a temp file, read and
checked member by member by the slug format's rules (``slug.py``), then renamed into place; the
same rules run again when it is unpacked, so a file changed on disk cannot escape either.

A slug dynod packs itself from a finished build (``SlugStore.store_directory``) is trusted as far
as ``pack_directory``'s own checks go: the walk that wrote it checked every member, so it is
renamed into the store without being read again, and the build directory itself becomes the
slug's unpacked tree (owner set, ``.git`` and sockets dropped, hard links split) instead of being
unpacked again for the first dyno.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO

import trio

from ..errors import NotFound, UserError
from .slug import (
    ROOT,
    SLUG_LIMIT,
    PackedBlock,
    SlugInfo,
    block_format,
    human_size,
    is_slug_id,
    pack_slug,
    scan_process_types,
    unpack_slug,
)

STALE_TEMP_SECONDS = 3600.0  # gc removes temp files this old: a store that crashed mid-write
_CHUNK = 1 << 20


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


class SlugStore:
    """Verified slugs under ``root`` as <sha256>.tgz (+ <sha256>.json with what was read from it,
    and <sha256>.blocks, the block index of a slug this store packed).

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
                        keep_tree_as: tuple[int, int] | None = None, reuse_from: str | None = None) -> SlugInfo:
        """Pack ``src`` (a finished build's /app) straight into the store.

        Trusted as far as ``pack_directory``'s checks go: the walk that wrote the tarball checked
        every member, so it is renamed in without being read back (no copy, no second pass).
        With ``keep_tree_as=(uid, gid)``, ``src`` itself is then moved in as the slug's unpacked
        tree, owned by uid:gid, so the first dyno does not unpack what was just packed; ``src`` is
        gone afterwards. That needs ``src`` on the store's filesystem and nothing else writing
        in it (the build container has exited); when it cannot be moved it stays where it is and
        the first dyno unpacks the tarball as usual.

        ``reuse_from`` names a slug this store packed before (the app's current one): its
        compressed blocks are copied where the new tar has the same bytes at the same place (a
        warm build's unchanged venv), instead of compressed again. The result is the same bytes
        either way (``slug.pack_slug``); a slug without a block index (uploaded, or packed before
        the index existed), or packed under another format, is simply not reused.
        """
        work = Path(tempfile.mkdtemp(prefix=".tmp-pack-", dir=self.root))
        try:
            with self._blocks_of(reuse_from) as reuse:
                packed, blocks = pack_slug(src, work, limit_bytes=min(limit_bytes or self.limit_bytes,
                                                                      self.limit_bytes), reuse=reuse)
            final = self._path(packed.id)
            with self._lock_for(packed.id):
                if not final.exists():
                    self._write_meta(packed.id, packed.process_types)
                    self._write_blocks(packed.id, blocks)
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
            raise UserError(f"The slug is over the {human_size(self.limit_bytes)} limit; remove unneeded "
                            "files (list them in .slugignore) and build again.")

    def _keep(self, tmp: Path, slug_id: str, size: int) -> SlugInfo:
        """Verify the temp file, then rename it into place (or drop it if already stored)."""
        final = self._path(slug_id)
        try:
            if final.exists():
                tmp.unlink()
                return self.get(slug_id)
            process_types = scan_process_types(tmp, self.limit_bytes)
            self._write_meta(slug_id, process_types)
            os.replace(tmp, final)
            _fsync_dir(self.root)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return SlugInfo(id=slug_id, path=final, size=size, process_types=process_types)

    @contextlib.contextmanager
    def _blocks_of(self, slug_id: str | None) -> Iterator[Callable[[str], bytes | None] | None]:
        """digest -> the compressed bytes of that block of a stored slug, if it has such a block."""
        index: dict[str, tuple[int, int]] = {}
        fd = -1
        if slug_id is not None and is_slug_id(slug_id):
            try:
                recorded = json.loads(self._blocks_path(slug_id).read_text())
                if recorded.get("format") == block_format():
                    index = {digest: (offset, length) for digest, offset, length in recorded["blocks"]}
                    fd = os.open(self._path(slug_id), os.O_RDONLY | os.O_NOFOLLOW)
            except (OSError, ValueError, KeyError, TypeError):
                index = {}  # no index, or not one this store wrote: pack without reuse
        if fd < 0:
            yield None
            return

        def read(digest: str) -> bytes | None:
            where = index.get(digest)
            if where is None:
                return None
            data = os.pread(fd, where[1], where[0])
            return data if len(data) == where[1] else None

        try:
            yield read
        finally:
            os.close(fd)

    def _write_blocks(self, slug_id: str, blocks: list[PackedBlock]) -> None:
        fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".blocks", dir=self.root)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump({"format": block_format(),
                           "blocks": [[b.digest, b.offset, b.length] for b in blocks]}, out)
            os.replace(name, self._blocks_path(slug_id))
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

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
            process_types = scan_process_types(path, self.limit_bytes)
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
                unpack_slug(path, work, uid, gid, limit_bytes=self.limit_bytes)
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
        if not is_slug_id(slug_id):
            return
        with self._lock_for(slug_id):
            self._path(slug_id).unlink(missing_ok=True)
            self._meta_path(slug_id).unlink(missing_ok=True)
            self._blocks_path(slug_id).unlink(missing_ok=True)
            shutil.rmtree(self.unpacked_root / slug_id, ignore_errors=True)

    def gc(self, keep: set[str]) -> list[str]:
        """Remove stored slugs (and their unpacked trees) whose id is not in ``keep``."""
        removed: list[str] = []
        for tarball in sorted(self.root.glob("*.tgz")):
            slug_id = tarball.name.removesuffix(".tgz")
            if not is_slug_id(slug_id) or slug_id in keep:
                continue
            with self._lock_for(slug_id):
                tarball.unlink(missing_ok=True)
                self._meta_path(slug_id).unlink(missing_ok=True)
                self._blocks_path(slug_id).unlink(missing_ok=True)
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

    def _blocks_path(self, slug_id: str) -> Path:
        return self.root / f"{slug_id}.blocks"  # where its compressed blocks are (store_directory)

    def _existing(self, slug_id: str) -> Path:
        # The id becomes a file name: only a sha256 hex string may get that far.
        if not is_slug_id(slug_id) or not self._path(slug_id).is_file():
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
