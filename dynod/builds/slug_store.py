"""The slug store: the server's verified slugs, addressed by the sha256 of their bytes.

Nothing enters the store unverified: an uploaded slug is written to a temp file, read and
checked member by member by the slug format's rules (``slug.py``), then renamed into place; the
same rules run again when it is unpacked, so a file changed on disk cannot escape either.

A slug dynod packs itself from a finished build (``SlugStore.store_directory``, or its steps
``adopt_tree``, ``store_tree``, ``keep_tree``) is trusted as far as the slug rules' walk goes
(``slug.check_tree``): every member was checked before anything changed, so it is renamed into
the store without being read again, and the build directory itself becomes the slug's unpacked
tree (owner set, ``.git`` and sockets dropped, hard links split) instead of being unpacked again
for the first dyno; a deploy boots its dynos from that tree while the slug packs.
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import trio

from ..errors import NotFound, UserError
from .archive import remove_tree
from .slug import (
    ROOT,
    SLUG_LIMIT,
    CheckedTree,
    PackedBlock,
    SlugInfo,
    block_format,
    check_tree,
    human_size,
    is_slug_id,
    pack_slug,
    scan_process_types,
    unpack_slug,
)

STALE_TEMP_SECONDS = 3600.0  # gc removes temp files this old: a store that crashed mid-write
_CHUNK = 1 << 20


def _match_unpacked_tree(root: str, checked: CheckedTree, uid: int, gid: int) -> None:
    """Make a checked tree, moved to ``root`` since, what unpacking its slug will give: the same
    entries, owned by uid:gid. Walks nothing: check_tree's walk listed every entry.

    The slug leaves out ``.git`` and sockets, so they go; a hard-linked file is packed as a file
    of its own, so it gets an inode of its own (a link shared with anything else would let a
    change there reach every dyno of the slug). The rest, the modes and links the rules checked,
    stays as it is; so do the directories' mtimes, which the slug records: a directory that lost
    an entry or had a link split gets its own back, so the tree packs as it would have before.
    """
    old_root = checked.members[0][0]
    at = len(old_root)
    changed: dict[str, os.stat_result] = {}  # directory -> its lstat before
    directories = {path: st for path, st in checked.members if stat.S_ISDIR(st.st_mode)}
    directories[old_root] = checked.members[0][1]
    try:
        for path, st in checked.dropped:
            parent = os.path.dirname(path)
            changed.setdefault(parent, directories[parent])
            moved = root + path[at:]
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(moved)
            else:
                os.unlink(moved)
        for path, st in checked.members:
            moved = root + path[at:]
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                st = os.lstat(moved)  # splitting its other links may have left this one alone
                if st.st_nlink > 1:
                    parent = os.path.dirname(path)
                    changed.setdefault(parent, directories[parent])
                    st = _split_hard_link(moved, st)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.lchown(moved, uid, gid)
    finally:  # a tree given back half made (adopt_tree) still packs as the build left it
        for path, st in changed.items():
            with contextlib.suppress(OSError):
                os.utime(root + path[at:], ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


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


@dataclass(frozen=True)
class AdoptedTree:
    """A build's /app, checked against the slug rules and (``dir`` not None) moved into the
    store to become its slug's unpacked tree: ``dir`` holds ``app/``, as an unpacked slug's does."""
    dir: Path | None
    app: Path  # what to pack: dir / "app", or the build's /app where it could not be moved
    checked: CheckedTree


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
        # What a dynod stopped mid-pack left (a build's whole tree waiting for its slug, a temp
        # tarball): nothing else would ever remove it.
        self._remove_stale_temps()

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

        Trusted as far as the slug rules' walk goes (``check_tree``): every member was checked, so
        the tarball is renamed in without being read back (no copy, no second pass).
        With ``keep_tree_as=(uid, gid)``, ``src`` itself is moved in as the slug's unpacked
        tree, owned by uid:gid, so the first dyno does not unpack what was just packed; ``src`` is
        gone afterwards. That needs ``src`` on the store's filesystem and nothing else writing
        in it (the build container has exited); when it cannot be moved it stays where it is and
        the first dyno unpacks the tarball as usual. (``adopt_tree``, ``store_tree`` and
        ``keep_tree`` are the same steps one by one, for a caller that uses the tree meanwhile.)

        ``reuse_from`` names a slug this store packed before (the app's current one): its
        compressed blocks are copied where the new tar has the same bytes at the same place (a
        warm build's unchanged venv), instead of compressed again. The result is the same bytes
        either way (``slug.pack_slug``); a slug without a block index (uploaded, or packed before
        the index existed), or packed under another format, is simply not reused.
        """
        if keep_tree_as is None:
            checked = check_tree(src, limit_bytes=self._limit(limit_bytes))
            return self.store_tree(AdoptedTree(None, Path(src), checked), limit_bytes=limit_bytes,
                                   reuse_from=reuse_from)
        tree = self.adopt_tree(src, *keep_tree_as, limit_bytes=limit_bytes)
        try:
            packed = self.store_tree(tree, limit_bytes=limit_bytes, reuse_from=reuse_from)
        except BaseException:
            self.discard_tree(tree)
            raise
        if not self.keep_tree(tree, packed.id):
            self.discard_tree(tree)  # the store has this slug's tree already
        return packed

    def adopt_tree(self, src: Path, uid: int, gid: int, *, limit_bytes: int | None = None) -> AdoptedTree:
        """Check a finished build's /app against the slug rules (refused: one UserError, and
        nothing changed), then move it into the store as a tree waiting for its slug's id
        (``unpacked/.tmp-tree-*/app``), made what unpacking that slug will give (owned by uid:gid,
        no ``.git`` or sockets, no hard links). Where it cannot be moved (another filesystem, a
        link to the app directory) it stays where it is (``AdoptedTree.dir`` None)."""
        src = Path(src)
        checked = check_tree(src, limit_bytes=self._limit(limit_bytes))
        if not stat.S_ISDIR(src.lstat().st_mode):
            return AdoptedTree(None, src, checked)  # moving a link would move the link, not the tree
        work = Path(tempfile.mkdtemp(prefix=".tmp-tree-", dir=self.unpacked_root))
        try:
            os.rename(src, work / ROOT)
        except OSError:  # another filesystem (EXDEV): the first dyno unpacks the tarball
            work.rmdir()
            return AdoptedTree(None, src, checked)
        try:
            _match_unpacked_tree(str(work / ROOT), checked, uid, gid)
            os.chmod(work, 0o755)
        except OSError as exc:
            # Only the shortcut failed: the tree goes back (what was done to it packs the same),
            # and the first dyno unpacks the tarball as it would an uploaded slug's.
            try:
                os.rename(work / ROOT, src)
            except OSError:
                shutil.rmtree(work, ignore_errors=True)
                raise UserError(f"The build's files could not be moved back after {exc.strerror}; "
                                "build again.") from None
            work.rmdir()
            return AdoptedTree(None, src, checked)
        return AdoptedTree(work, work / ROOT, checked)

    def store_tree(self, tree: AdoptedTree, *, limit_bytes: int | None = None,
                   reuse_from: str | None = None) -> SlugInfo:
        """Pack a tree ``adopt_tree`` checked (and moved, or left) into the store; the tree stays."""
        work = Path(tempfile.mkdtemp(prefix=".tmp-pack-", dir=self.root))
        try:
            with self._blocks_of(reuse_from) as reuse:
                packed, blocks = pack_slug(tree.app, work, limit_bytes=self._limit(limit_bytes), reuse=reuse,
                                           checked=tree.checked)
            final = self._path(packed.id)
            with self._lock_for(packed.id):
                if not final.exists():
                    self._write_meta(packed.id, packed.process_types)
                    self._write_blocks(packed.id, blocks)
                    os.replace(packed.path, final)
                    _fsync_dir(self.root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return SlugInfo(id=packed.id, path=final, size=packed.size, process_types=packed.process_types)

    def keep_tree(self, tree: AdoptedTree, slug_id: str) -> bool:
        """Make a moved tree (``adopt_tree``) the unpacked tree of ``slug_id``, packed from it.
        False when there is nothing to keep (not moved) or the slug has its tree already: the
        caller then removes it (``discard_tree``) once nothing uses it."""
        if tree.dir is None:
            return False
        final = self.unpacked_root / slug_id
        with self._lock_for(slug_id):
            if final.is_dir():
                return False
            try:
                os.rename(tree.dir, final)
            except OSError:  # the slug is stored and complete: its first dyno unpacks it instead
                return False
        return True

    def discard_tree(self, tree: AdoptedTree) -> None:
        """Remove a moved tree that did not become a slug's (its pack failed, or it was a copy)."""
        if tree.dir is not None:
            remove_tree(tree.dir)

    def _limit(self, limit_bytes: int | None) -> int:
        return min(limit_bytes or self.limit_bytes, self.limit_bytes)

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
