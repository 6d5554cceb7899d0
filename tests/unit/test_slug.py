"""Slugs: reproducible packing, verification of hostile tarballs, store, unpack and gc."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from dynod.builds.slug import pack_directory
from dynod.builds.slug_store import STALE_TEMP_SECONDS, SlugStore
from dynod.errors import NotFound, UserError

MTIME = 1_600_000_000


# ---- building tarballs in memory -----------------------------------------------------------------

def _info(name: str, kind: bytes, mode: int = 0o644, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def reg(name: str, data: bytes = b"x", mode: int = 0o644):
    return _info(name, tarfile.REGTYPE, mode, size=len(data)), data


def dir_(name: str, mode: int = 0o755):
    return _info(name, tarfile.DIRTYPE, mode), None


def sym(name: str, target: str):
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def hard(name: str, target: str):
    return _info(name, tarfile.LNKTYPE, 0o644, linkname=target), None


def special(name: str, kind: bytes):
    return _info(name, kind, 0o644, devmajor=1, devminor=3), None


def tarball(*members, compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


GOOD = (dir_("app"), reg("app/Procfile", b"web: python -m http.server $PORT\nworker: python w.py\n"),
        reg("app/server.py", b"print('hi')\n", 0o755), dir_("app/lib"),
        sym("app/lib/current", "../server.py"), sym("app/abs", "/app/lib"),
        hard("app/server-copy.py", "app/server.py"))


# ---- fixtures ------------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> SlugStore:
    return SlugStore(tmp_path / "slugs", limit_bytes=1 << 20)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "Procfile").write_text("web: ./server $PORT\n")
    (src / "server").write_text("#!/bin/sh\nexec sleep 1\n")
    (src / "server").chmod(0o755)
    (src / "lib" / "data.txt").write_text("data\n")
    (src / "lib" / "link").symlink_to("data.txt")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    for path in [*src.rglob("*"), src]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    return src


# ---- packing -------------------------------------------------------------------------------------

def test_pack_is_reproducible_and_normalized(app_dir: Path, tmp_path: Path) -> None:
    first = pack_directory(app_dir, tmp_path / "out1")
    os.utime(app_dir / "lib" / "data.txt", (MTIME + 99, MTIME))  # atime differs: must not matter
    second = pack_directory(app_dir, tmp_path / "out2")
    assert first.id == second.id
    assert first.path == tmp_path / "out1" / f"{first.id}.tgz"
    raw = first.path.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == first.id and first.size == len(raw)
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    assert first.process_types == {"web": "./server $PORT"}
    with tarfile.open(first.path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["app", "app/Procfile", "app/lib", "app/lib/data.txt",
                                         "app/lib/link", "app/server"]  # sorted, .git skipped
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["app/server"].mode == 0o755 and by_name["app/server"].mtime == MTIME
    assert by_name["app/lib/link"].issym() and by_name["app/lib/link"].linkname == "data.txt"
    assert [p.name for p in (tmp_path / "out1").iterdir()] == [first.path.name]  # no temp left


def test_pack_changes_with_content(app_dir: Path, tmp_path: Path) -> None:
    before = pack_directory(app_dir, tmp_path / "a")
    (app_dir / "lib" / "data.txt").write_text("other\n")
    os.utime(app_dir / "lib" / "data.txt", (MTIME, MTIME))
    assert pack_directory(app_dir, tmp_path / "b").id != before.id


def test_pack_without_procfile_has_no_process_types(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.html").write_text("hi")
    assert pack_directory(src, tmp_path / "out").process_types == {}


def _setuid_file(path: Path) -> None:
    path.write_text("x")
    path.chmod(0o4755)


@pytest.mark.parametrize("make, message", [
    (lambda src: os.mkfifo(src / "pipe"), "'app/pipe' is a FIFO"),
    (lambda src: _setuid_file(src / "tool"), "'app/tool' has the setuid"),
    (lambda src: (src / "up").symlink_to("../../outside"), "'app/up' is a symlink to '../../outside', which leaves"),
    (lambda src: (src / "Procfile").write_text("not a procfile line\n"), "Malformed Procfile line 1"),
])
def test_pack_refuses_what_the_store_would_refuse(tmp_path: Path, make: Callable[[Path], object],
                                                   message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make(src)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        pack_directory(src, out)
    assert list(out.iterdir()) == []


def test_pack_over_the_limit_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(UserError, match="over the 32768 bytes limit.*'app/big'"):
        pack_directory(src, tmp_path / "out", limit_bytes=32 * 1024)
    assert list((tmp_path / "out").iterdir()) == []


def test_pack_of_a_missing_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a directory"):
        pack_directory(tmp_path / "nope", tmp_path / "out")


def test_slug_format_imports_only_the_standard_library_and_nothing_of_the_daemon() -> None:
    # dynoctl packs slugs with this module: importing it must not load trio, isal or any other
    # third-party module, nor the store, the builder or the daemon.
    import subprocess
    import sys

    # Only what the import itself adds counts: the interpreter's start-up (site, the editable
    # install's finder) is there before it.
    code = ("import sys; before = set(sys.modules); import dynod.builds.slug; "
            "added = set(sys.modules) - before; "
            "print(sorted({m.split('.')[0] for m in added} - set(sys.stdlib_module_names))); "
            "print(sorted(m for m in added if m.startswith('dynod')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    outside, ours = out.stdout.splitlines()
    assert outside == str(["dynod"])
    assert ours == str(sorted(["dynod", "dynod.errors", "dynod.exports", "dynod.procfile", "dynod.builds",
                               "dynod.builds.archive", "dynod.builds.slug"]))


def test_unpack_slug_writes_app_owned_as_asked_and_refuses_a_hostile_member(tmp_path: Path) -> None:
    from dynod.builds.slug import unpack_slug

    good = tmp_path / "good.tgz"
    good.write_bytes(tarball(*GOOD))
    (tmp_path / "out").mkdir()
    unpack_slug(good, tmp_path / "out", os.getuid(), os.getgid())
    assert (tmp_path / "out" / "app" / "Procfile").is_file()
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(tarball(dir_("app"), sym("app/escape", "../../etc"), reg("app/escape/passwd")))
    (tmp_path / "out2").mkdir()
    with pytest.raises(UserError, match="leaves app/"):
        unpack_slug(bad, tmp_path / "out2", os.getuid(), os.getgid())
    assert not (tmp_path / "etc").exists()


# ---- the store: good slugs -----------------------------------------------------------------------

def test_store_file_keeps_a_verified_slug_and_reads_its_procfile(store: SlugStore, tmp_path: Path) -> None:
    upload = tmp_path / "upload.tgz"
    upload.write_bytes(tarball(*GOOD))
    info = store.store_file(upload)
    assert info.id == hashlib.sha256(upload.read_bytes()).hexdigest()
    assert info.path == store.root / f"{info.id}.tgz" and info.size == upload.stat().st_size
    assert info.process_types == {"web": "python -m http.server $PORT", "worker": "python w.py"}
    assert store.get(info.id) == info
    assert store.store_file(upload) == info  # storing twice is a no-op
    assert listing(store.root) == sorted([f"{info.id}.tgz", f"{info.id}.json", "unpacked"])


async def test_store_stream_matches_store_file(store: SlugStore) -> None:
    data = tarball(*GOOD)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100):  # many small chunks, as HTTP delivers them
            yield data[start:start + 100]

    info = await store.store_stream(chunks())
    assert info.id == hashlib.sha256(data).hexdigest()
    assert store.get(info.id).process_types["web"].startswith("python")


def test_dot_slash_names_are_accepted(store: SlugStore, tmp_path: Path) -> None:
    upload = tmp_path / "s.tgz"
    upload.write_bytes(tarball(dir_("./app"), reg("./app/Procfile", b"web: x\n")))
    assert store.store_file(upload).process_types == {"web": "x"}


def test_get_rebuilds_lost_metadata(store: SlugStore, tmp_path: Path) -> None:
    upload = tmp_path / "s.tgz"
    upload.write_bytes(tarball(*GOOD))
    info = store.store_file(upload)
    (store.root / f"{info.id}.json").unlink()
    assert store.get(info.id) == info
    assert (store.root / f"{info.id}.json").exists()


@pytest.mark.parametrize("slug_id", ["0" * 64, "../../etc/passwd", "ABC", ""])
def test_get_and_unpacked_of_unknown_ids_are_not_found(store: SlugStore, slug_id: str) -> None:
    with pytest.raises(NotFound, match="Couldn't find that slug"):
        store.get(slug_id)
    with pytest.raises(NotFound):
        store.unpacked(slug_id, os.getuid(), os.getgid())


# ---- the store: hostile slugs --------------------------------------------------------------------

HOSTILE = [
    ("absolute path", [dir_("app"), reg("/etc/cron.d/x")], "'/etc/cron.d/x' is an absolute path"),
    ("dotdot", [dir_("app"), reg("app/../../evil")], "'app/../../evil' has a '..' component"),
    ("outside app", [dir_("app"), reg("etc/passwd")], "'etc/passwd' is outside app/"),
    ("root not a dir", [reg("app")], "'app' must be the app directory"),
    ("symlink relative out", [dir_("app"), sym("app/a/x", "../../../etc")], "'app/a/x' is a symlink"),
    # An absolute link may name a stack path, but nothing is ever written through it.
    ("through an absolute symlink", [dir_("app"), sym("app/etc", "/etc"), reg("app/etc/cron.d/x")],
     "'app/etc/cron.d/x' lies beneath app/etc, which is a symlink"),
    ("hard link out", [dir_("app"), hard("app/x", "etc/passwd")], "'app/x' is outside app/"),
    ("hard link absolute", [dir_("app"), hard("app/x", "/etc/passwd")], "absolute path"),
    ("hard link to nothing", [dir_("app"), hard("app/x", "app/missing")], "not an earlier file"),
    ("hard link to a symlink", [dir_("app"), sym("app/s", "/app"), hard("app/x", "app/s")], "not an earlier"),
    ("char device", [dir_("app"), special("app/null", tarfile.CHRTYPE)], "'app/null' is a device node"),
    ("block device", [dir_("app"), special("app/sda", tarfile.BLKTYPE)], "'app/sda' is a device node"),
    ("fifo", [dir_("app"), special("app/p", tarfile.FIFOTYPE)], "'app/p' is a FIFO"),
    ("setuid", [dir_("app"), reg("app/su", b"x", 0o4755)], "'app/su' has the setuid or setgid"),
    ("setgid dir", [dir_("app"), dir_("app/d", 0o2755)], "'app/d' has the setuid or setgid"),
    ("through a symlink", [dir_("app"), sym("app/l", "/app/real"), reg("app/l/f")],
     "'app/l/f' lies beneath app/l, which is a symlink"),
    ("beneath a file", [dir_("app"), reg("app/f"), reg("app/f/g")], "beneath app/f, which is a file"),
    ("duplicate", [dir_("app"), reg("app/f"), reg("app/f", b"again")], "'app/f' appears twice"),
    ("symlink then file", [dir_("app"), sym("app/f", "/app/g"), reg("app/f")], "appears twice"),
    ("procfile link", [dir_("app"), sym("app/Procfile", "/app/x")], "'app/Procfile' must be a regular file"),
    ("bad procfile", [dir_("app"), reg("app/Procfile", b"???\n")], "Malformed Procfile line 1"),
    ("too big", [dir_("app"), reg("app/big", b"\0" * (2 << 20))], "over the 1 MB limit at member 'app/big'"),
    ("many members", [dir_("app"), *[dir_(f"app/d{i}") for i in range(2100)]], "over the 1 MB limit"),
]


@pytest.mark.parametrize("members, message", [case[1:] for case in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_tarballs_are_refused_leaving_nothing(store: SlugStore, tmp_path: Path, members,
                                                      message: str) -> None:
    upload = tmp_path / "hostile.tgz"
    upload.write_bytes(tarball(*members))
    before = listing(store.root)
    with pytest.raises(UserError, match=message):
        store.store_file(upload)
    assert listing(store.root) == before


@pytest.mark.parametrize("payload, message", [
    (tarball(dir_("app"), reg("app/f"), compress=False), "not a gzip-compressed tar"),
    (gzip.compress(b"just some text, not a tar archive" * 40), "not a gzip-compressed tar"),
    (os.urandom(4096), "not a gzip-compressed tar"),
    (tarball(*GOOD)[:-30], "not a gzip-compressed tar"),  # truncated
    (tarball(), "empty archive"),
    (gzip.compress(tarball(*GOOD, compress=False) + b"\0" * (2 << 20)), "limit after the archive's end"),
    (b"", "not a gzip-compressed tar"),
], ids=["plain tar", "gzip of text", "random bytes", "truncated", "empty tar", "trailing bomb", "empty file"])
def test_things_that_are_not_slugs_are_refused_leaving_nothing(store: SlugStore, tmp_path: Path,
                                                               payload: bytes, message: str) -> None:
    upload = tmp_path / "upload.tgz"
    upload.write_bytes(payload)
    with pytest.raises(UserError, match=message):
        store.store_file(upload)
    assert listing(store.root) == ["unpacked"]


async def test_a_stream_over_the_compressed_limit_stops_early_leaving_nothing(store: SlugStore) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 64 * 1024
            yield os.urandom(64 * 1024)

    with pytest.raises(UserError, match="over the 1 MB limit"):
        await store.store_stream(endless())
    assert sent <= (1 << 20) + 64 * 1024
    assert listing(store.root) == ["unpacked"]


async def test_a_hostile_stream_is_refused_leaving_nothing(store: SlugStore) -> None:
    data = tarball(dir_("app"), sym("app/x", "../etc"))

    async def once() -> AsyncIterator[bytes]:
        yield data

    with pytest.raises(UserError, match="which leaves app/"):
        await store.store_stream(once())
    assert listing(store.root) == ["unpacked"]


def test_missing_upload_file_is_a_user_error(store: SlugStore, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="Cannot read slug file"):
        store.store_file(tmp_path / "nope.tgz")


# ---- unpacking -----------------------------------------------------------------------------------

def test_unpacked_tree_has_content_modes_links_and_owner(store: SlugStore, tmp_path: Path) -> None:
    upload = tmp_path / "s.tgz"
    upload.write_bytes(tarball(*GOOD))
    info = store.store_file(upload)
    uid, gid = (61000, 61000) if os.getuid() == 0 else (os.getuid(), os.getgid())
    root = store.unpacked(info.id, uid, gid)
    assert root == store.unpacked_root / info.id
    app = root / "app"
    assert (app / "server.py").read_bytes() == b"print('hi')\n"
    assert stat.S_IMODE((app / "server.py").stat().st_mode) == 0o755
    assert (app / "server.py").stat().st_mtime == MTIME
    assert os.readlink(app / "lib" / "current") == "../server.py"
    assert os.readlink(app / "abs") == "/app/lib"
    assert (app / "server-copy.py").stat().st_ino == (app / "server.py").stat().st_ino
    assert app.stat().st_mtime == MTIME and (app / "lib").stat().st_mtime == MTIME
    for path in [app, *app.rglob("*")]:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (uid, gid), path
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert store.unpacked(info.id, uid, gid) == root  # second call reuses it


def test_parents_missing_from_the_archive_are_created(store: SlugStore, tmp_path: Path) -> None:
    upload = tmp_path / "s.tgz"
    upload.write_bytes(tarball(reg("app/deep/er/file", b"z")))
    info = store.store_file(upload)
    root = store.unpacked(info.id, os.getuid(), os.getgid())
    assert (root / "app" / "deep" / "er" / "file").read_bytes() == b"z"


def test_concurrent_unpacks_agree_and_leave_no_temp(store: SlugStore, tmp_path: Path) -> None:
    upload = tmp_path / "s.tgz"
    upload.write_bytes(tarball(*GOOD, *[reg(f"app/f{i}", b"y" * 100) for i in range(200)]))
    info = store.store_file(upload)
    results: list[Path | BaseException] = []

    def unpack() -> None:
        try:
            results.append(store.unpacked(info.id, os.getuid(), os.getgid()))
        except BaseException as exc:
            results.append(exc)

    # A second store on the same root has its own locks: only the atomic rename keeps it safe.
    other = SlugStore(store.root, limit_bytes=store.limit_bytes)
    threads = [threading.Thread(target=unpack) for _ in range(3)]
    threads.append(threading.Thread(target=lambda: results.append(
        other.unpacked(info.id, os.getuid(), os.getgid()))))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [store.unpacked_root / info.id] * 4
    assert [p.name for p in store.unpacked_root.iterdir()] == [info.id]
    # GOOD has five entries directly in app/, plus the 200 files.
    assert len(list((store.unpacked_root / info.id / "app").iterdir())) == 5 + 200


def test_unpack_rechecks_a_tarball_swapped_on_disk(store: SlugStore, tmp_path: Path) -> None:
    upload = tmp_path / "s.tgz"
    upload.write_bytes(tarball(*GOOD))
    info = store.store_file(upload)
    info.path.write_bytes(tarball(dir_("app"), sym("app/l", "/app/x"), reg("app/l/passwd")))
    with pytest.raises(UserError, match="lies beneath app/l"):
        store.unpacked(info.id, os.getuid(), os.getgid())
    assert list(store.unpacked_root.iterdir()) == []


# ---- packing a build straight into the store -----------------------------------------------------

def owner() -> tuple[int, int]:
    return (61000, 61000) if os.getuid() == 0 else (os.getuid(), os.getgid())


def describe(root: Path) -> dict[str, tuple]:
    """What a dyno sees of a tree: kinds, modes, owners, contents, link targets, file mtimes."""
    seen: dict[str, tuple] = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            what: object = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            what = (path.read_bytes(), int(st.st_mtime))
        else:
            what = "dir"
        seen[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                            st.st_uid, st.st_gid, what)
    return seen


def test_store_directory_stores_the_slug_and_moves_the_tree_in(app_dir: Path, tmp_path: Path) -> None:
    import socket

    outside = tmp_path / "outside"
    outside.write_text("shared\n")
    os.link(outside, app_dir / "lib" / "linked")  # a hard link to a file outside the app
    reference = tmp_path / "reference"
    shutil.copytree(app_dir, reference, symlinks=True)  # the hard link becomes a file of its own
    with socket.socket(socket.AF_UNIX) as sock:  # a dev server's leftover: pack skips it
        sock.bind(str(app_dir / "lib" / "dev.sock"))
    uid, gid = owner()

    store = SlugStore(tmp_path / "slugs")
    info = store.store_directory(app_dir, keep_tree_as=(uid, gid))
    assert not app_dir.exists()  # moved, not copied
    assert info.id == pack_directory(reference, tmp_path / "packed").id
    assert info.process_types == {"web": "./server $PORT"}
    assert store.get(info.id) == info
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".tmp")] == []
    tree = store.unpacked_root / info.id
    assert store.unpacked(info.id, uid, gid) == tree  # there already: nothing is unpacked

    # The same tree unpacking the tarball gives (what an uploaded copy of this slug would get).
    other = SlugStore(tmp_path / "other")
    unpacked = other.unpacked(other.store_file(info.path).id, uid, gid)
    assert describe(tree) == describe(unpacked)
    assert not (tree / "app" / ".git").exists() and not (tree / "app" / "lib" / "dev.sock").exists()
    assert stat.S_IMODE(tree.stat().st_mode) == 0o755
    # The former hard link is a file of its own: a change outside never reaches the slug's dynos.
    outside.write_text("changed\n")
    assert (tree / "app" / "lib" / "linked").read_text() == "shared\n"


def test_store_directory_refuses_what_pack_refuses_leaving_src_and_store(app_dir: Path, tmp_path: Path) -> None:
    (app_dir / "server").chmod(0o4755)
    before = listing(app_dir)
    store = SlugStore(tmp_path / "slugs")
    with pytest.raises(UserError, match="setuid"):
        store.store_directory(app_dir, keep_tree_as=owner())
    assert listing(app_dir) == before
    assert listing(store.root) == ["unpacked"]


def test_store_directory_over_the_store_limit_is_refused(app_dir: Path, tmp_path: Path) -> None:
    (app_dir / "big").write_bytes(os.urandom(64 * 1024))
    store = SlugStore(tmp_path / "slugs", limit_bytes=32 * 1024)
    with pytest.raises(UserError, match="over the 32768 bytes limit"):
        store.store_directory(app_dir, limit_bytes=1 << 30)  # the store's own limit still holds
    assert listing(store.root) == ["unpacked"]


def test_store_directory_from_another_filesystem_leaves_the_tree_for_unpacking(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test's tmp dir")
    src = Path(tempfile.mkdtemp(dir=shm))
    try:
        (src / "Procfile").write_text("web: x\n")
        store = SlugStore(tmp_path / "slugs")
        info = store.store_directory(src, keep_tree_as=owner())
        assert (src / "Procfile").is_file()  # a rename across filesystems fails: left in place
        assert list(store.unpacked_root.iterdir()) == []
        tree = store.unpacked(info.id, *owner())
        assert (tree / "app" / "Procfile").read_text() == "web: x\n"
    finally:
        shutil.rmtree(src)


def test_store_directory_of_a_slug_already_unpacked_keeps_the_tree_it_had(app_dir: Path, tmp_path: Path) -> None:
    second = tmp_path / "second"
    shutil.copytree(app_dir, second, symlinks=True)
    store = SlugStore(tmp_path / "slugs")
    first = store.store_directory(app_dir, keep_tree_as=owner())
    tree = store.unpacked_root / first.id
    inode = tree.stat().st_ino
    again = store.store_directory(second, keep_tree_as=owner())
    assert again == first
    assert not second.exists()  # moved in, then dropped as a copy of the tree the store had
    assert [p.name for p in store.unpacked_root.iterdir()] == [first.id]
    assert tree.stat().st_ino == inode  # the dynos' lower layer was never replaced


def test_an_adopted_tree_packs_as_the_build_left_it(app_dir: Path, tmp_path: Path) -> None:
    """adopt_tree moves and fixes the tree before the pack (a dyno may boot from it meanwhile):
    the slug is byte for byte what packing the build's tree as it was gives, directory mtimes
    included, though .git, a socket and a hard link were taken out of it first."""
    import socket

    outside = tmp_path / "outside"
    outside.write_text("shared\n")
    os.link(outside, app_dir / "lib" / "linked")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(app_dir / "lib" / "dev.sock"))
    for directory in (app_dir, app_dir / "lib"):
        os.utime(directory, (1_600_000_000, 1_600_000_000))
    reference = pack_directory(app_dir, tmp_path / "reference")  # the tree as the build left it
    store = SlugStore(tmp_path / "slugs")
    tree = store.adopt_tree(app_dir, *owner())
    assert tree.dir is not None and tree.dir.parent == store.unpacked_root and not app_dir.exists()
    assert not (tree.app / ".git").exists() and not (tree.app / "lib" / "dev.sock").exists()
    assert (tree.app / "lib" / "linked").stat().st_nlink == 1
    assert (tree.app / "lib").stat().st_mtime == 1_600_000_000 == tree.app.stat().st_mtime
    assert [p.name for p in store.root.iterdir()] == ["unpacked"]  # nothing packed yet
    packed = store.store_tree(tree)
    assert packed.id == reference.id
    assert store.keep_tree(tree, packed.id)
    assert not tree.dir.exists() and (store.unpacked_root / packed.id / "app" / "Procfile").is_file()
    assert store.unpacked(packed.id, *owner()) == store.unpacked_root / packed.id


def test_adopt_tree_refuses_what_pack_refuses_before_touching_the_tree(app_dir: Path, tmp_path: Path) -> None:
    (app_dir / "lib" / "fifo").unlink(missing_ok=True)
    os.mkfifo(app_dir / "lib" / "fifo")
    before = listing(app_dir)
    store = SlugStore(tmp_path / "slugs")
    with pytest.raises(UserError, match="is a FIFO"):
        store.adopt_tree(app_dir, *owner())
    assert listing(app_dir) == before
    assert list(store.unpacked_root.iterdir()) == []


def test_a_tree_not_kept_is_discarded_by_its_caller(app_dir: Path, tmp_path: Path) -> None:
    store = SlugStore(tmp_path / "slugs")
    second = tmp_path / "second"
    shutil.copytree(app_dir, second, symlinks=True)
    first = store.store_directory(app_dir, keep_tree_as=owner())
    tree = store.adopt_tree(second, *owner())
    assert store.store_tree(tree).id == first.id
    assert not store.keep_tree(tree, first.id)  # the store has this slug's tree: this one is a copy
    assert tree.dir is not None and tree.dir.is_dir()  # left for the caller (a dyno may run on it)
    store.discard_tree(tree)
    assert [p.name for p in store.unpacked_root.iterdir()] == [first.id]


# ---- gc ------------------------------------------------------------------------------------------

def test_gc_removes_unkept_slugs_with_their_trees_and_stale_temps(store: SlugStore, tmp_path: Path) -> None:
    ids = []
    for n in range(3):
        upload = tmp_path / f"s{n}.tgz"
        upload.write_bytes(tarball(dir_("app"), reg("app/n", str(n).encode())))
        ids.append(store.store_file(upload).id)
        store.unpacked(ids[-1], os.getuid(), os.getgid())
    stale = store.root / ".tmp-crashed.tgz"
    stale.write_bytes(b"half")
    old = time.time() - STALE_TEMP_SECONDS - 10
    os.utime(stale, (old, old))
    fresh = store.root / ".tmp-writing.tgz"
    fresh.write_bytes(b"in progress")

    removed = store.gc({ids[1]})
    assert sorted(removed) == sorted([ids[0], ids[2]])
    assert listing(store.root) == sorted([
        ".tmp-writing.tgz", f"{ids[1]}.json", f"{ids[1]}.tgz", "unpacked", f"unpacked/{ids[1]}",
        f"unpacked/{ids[1]}/app", f"unpacked/{ids[1]}/app/n"])
    with pytest.raises(NotFound):
        store.get(ids[0])
    assert store.gc({ids[1]}) == []


def test_absolute_symlinks_into_the_stack_are_kept_and_never_followed_on_the_host(
        store: SlugStore, tmp_path: Path) -> None:
    # What `dpkg -x` leaves in a slug (the apt buildpack): links into the stack's /usr and /etc.
    # Inside a dyno they resolve in the dyno's own root; on the host, packing and unpacking must
    # keep them as links and never read or write what they point at.
    src = tmp_path / "app"
    (src / ".apt" / "usr" / "lib").mkdir(parents=True)
    (src / "Procfile").write_text("web: true\n")
    (src / ".apt" / "usr" / "lib" / "libpq.so").symlink_to("/usr/lib/x86_64-linux-gnu/libpq.so.5")
    secret = tmp_path / "host-secret"
    secret.write_text("host only\n")
    (src / "secret").symlink_to(secret)
    info = store.store_directory(src)
    uid, gid = (61000, 61000) if os.getuid() == 0 else (os.getuid(), os.getgid())
    app = store.unpacked(info.id, uid, gid) / "app"
    assert os.readlink(app / ".apt" / "usr" / "lib" / "libpq.so") == "/usr/lib/x86_64-linux-gnu/libpq.so.5"
    assert os.readlink(app / "secret") == str(secret)
    assert secret.read_text() == "host only\n" and secret.stat().st_uid == os.getuid()  # not chowned through
    with tarfile.open(info.path) as tar:
        member = tar.getmember("app/secret")
        assert member.issym() and member.size == 0  # the link, not the host file's bytes


# ---- blocks: packing reuses an earlier slug's compressed blocks ----------------------------------

def _venv_like(src: Path, seed: int) -> None:
    """An app whose big, unchanged part sorts first (like .heroku/python) and its source after."""
    import random

    rng = random.Random(seed)
    venv = src / ".heroku" / "python" / "lib"
    venv.mkdir(parents=True)
    for n in range(40):  # ~3.5 MiB: several blocks, compressible like code
        words = [rng.choice(["def", "return", "import", "self", "value", "class", "(x)", "\n"]) for _ in range(12000)]
        (venv / f"mod{n:02}.py").write_text(" ".join(words))
    (src / "Procfile").write_text("web: python app.py\n")
    (src / "app.py").write_text("print('hello')\n")
    for path in [*src.rglob("*"), src]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)


def test_a_slug_is_one_gzip_member_of_independent_blocks_read_by_any_gunzip(tmp_path: Path) -> None:
    from dynod.builds.slug import BLOCK_SIZE, pack_slug

    src = tmp_path / "src"
    _venv_like(src, 1)
    info, blocks = pack_slug(src, tmp_path / "out")
    raw = info.path.read_bytes()
    inflate = zlib.decompressobj(31)
    tar_bytes = inflate.decompress(raw)
    assert inflate.eof and inflate.unused_data == b""  # one member, nothing after it
    # tar pads its output to whole records of BLOCK_SIZE; every block but the last is indexed.
    assert len(tar_bytes) >= 3 * BLOCK_SIZE and len(tar_bytes) % BLOCK_SIZE == 0
    assert len(blocks) == len(tar_bytes) // BLOCK_SIZE - 1
    assert subprocess_ok(["gzip", "-t", str(info.path)])
    # Each block inflates on its own (no dictionary from the one before) to its part of the tar.
    for n, block in enumerate(blocks):
        part = zlib.decompressobj(-15).decompress(raw[block.offset:block.offset + block.length])
        assert part == tar_bytes[n * BLOCK_SIZE:(n + 1) * BLOCK_SIZE]
        # Known by its BLAKE3, as the library itself computes it (256 bits, hex).
        assert block.digest == blake3(part).hexdigest() and len(block.digest) == 64


def subprocess_ok(argv: list[str]) -> bool:
    import subprocess

    return subprocess.run(argv, capture_output=True).returncode == 0


def test_reused_blocks_give_the_bytes_packing_afresh_gives(tmp_path: Path) -> None:
    from dynod.builds.slug import pack_slug

    src = tmp_path / "src"
    _venv_like(src, 2)
    first, first_blocks = pack_slug(src, tmp_path / "first")
    raw = first.path.read_bytes()
    lent = {b.digest: raw[b.offset:b.offset + b.length] for b in first_blocks}

    # The next build: same venv, new source (like a warm push).
    (src / "app.py").write_text("print('hello again')\n")
    asked: list[bool] = []

    def reuse(digest: str) -> bytes | None:
        asked.append(digest in lent)
        return lent.get(digest)

    afresh = pack_slug(src, tmp_path / "afresh")[0]
    reused, _ = pack_slug(src, tmp_path / "reused", reuse=reuse)
    assert reused.id == afresh.id != first.id
    assert reused.path.read_bytes() == afresh.path.read_bytes()
    assert asked.count(True) >= 2  # the venv's blocks came from the first slug
    # Blocks that lie (another block's bytes for a digest) would show in the id: the store's own
    # index is trusted, so this is what it must never hold; here it proves the reuse is real.
    wrong = next(iter(lent.values()))
    lying = pack_slug(src, tmp_path / "lying", reuse=lambda digest: wrong if digest in lent else None)[0]
    assert lying.id != afresh.id


def test_the_store_reuses_the_previous_slug_and_forgets_its_blocks_with_it(tmp_path: Path) -> None:
    from dynod.builds import slug

    store = SlugStore(tmp_path / "slugs")
    src = tmp_path / "src"
    _venv_like(src, 3)
    reference = tmp_path / "reference"
    first = store.store_directory(src)
    assert (store.root / f"{first.id}.blocks").is_file()
    (src / "app.py").write_text("print('v2')\n")
    shutil.copytree(src, reference, symlinks=True)
    compressed: list[int] = []
    real_compressobj = __import__("isal").isal_zlib.compressobj

    def counting(*args, **kwargs):
        compressed.append(1)
        return real_compressobj(*args, **kwargs)

    import isal.isal_zlib

    isal.isal_zlib.compressobj = counting
    try:
        second = store.store_directory(src, reuse_from=first.id)
        reused_count = len(compressed)
        compressed.clear()
        afresh = slug.pack_directory(reference, tmp_path / "afresh")
        afresh_count = len(compressed)
    finally:
        isal.isal_zlib.compressobj = real_compressobj
    assert second.id == afresh.id
    assert reused_count < afresh_count  # the unchanged blocks were copied, not compressed

    # An index written under another format (another isal, level or block size) is not used,
    # nor is one whose slug lost bytes: the pack is the same, only slower.
    index = store.root / f"{first.id}.blocks"
    recorded = index.read_text()
    index.write_text(recorded.replace(slug.block_format(), "deflate-blocks-v0"))
    (src / "app.py").write_text("print('v3')\n")
    shutil.rmtree(reference)
    shutil.copytree(src, reference, symlinks=True)
    assert store.store_directory(src, reuse_from=first.id).id == slug.pack_directory(reference, tmp_path / "a3").id
    index.write_text(recorded)
    with open(store.root / f"{first.id}.tgz", "r+b") as tgz:
        tgz.truncate(100)
    (src / "app.py").write_text("print('v4')\n")
    shutil.rmtree(reference)
    shutil.copytree(src, reference, symlinks=True)
    assert store.store_directory(src, reuse_from=first.id).id == slug.pack_directory(reference, tmp_path / "a4").id
    for bad in ("../../etc/passwd", "not-a-slug", None):
        store.store_directory(src, reuse_from=bad)  # nothing to reuse: packs as usual

    kept = store.store_directory(src).id
    store.gc({kept})
    assert sorted(p.name for p in store.root.glob("*.blocks")) == [f"{kept}.blocks"]
    store.remove(kept)
    assert list(store.root.glob("*.blocks")) == []


def test_pack_keeps_link_targets_as_written_and_skips_nested_git(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "lib" / ".git").mkdir(parents=True)
    (src / "lib" / ".git" / "HEAD").write_text("x")
    (src / "lib" / "data").write_text("d")
    (src / "lib" / "dot").symlink_to("./data")  # the name transform (./ -> app/) must not touch targets
    (src / "abs").symlink_to("/usr/lib/x86_64-linux-gnu/libpq.so.5")
    (src / ".hidden").write_text("h")
    deep = src / ("d" * 120)  # past ustar's 100 bytes: a PAX extended header names it
    deep.mkdir()
    (deep / "file").write_text("f")
    info = pack_directory(src, tmp_path / "out")
    assert pack_directory(src, tmp_path / "again").id == info.id  # nothing of tar's run (its pid) in it
    with tarfile.open(info.path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["app", "app/.hidden", "app/abs", f"app/{deep.name}", f"app/{deep.name}/file",
                               "app/lib", "app/lib/data", "app/lib/dot"]
    assert all(set(m.pax_headers) <= {"path", "linkpath"} for m in members.values())  # no atime/ctime
    assert members["app/lib/dot"].linkname == "./data"
    assert members["app/abs"].linkname == "/usr/lib/x86_64-linux-gnu/libpq.so.5"
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members.values())


def _tree_over_a_few_blocks(src: Path) -> None:
    src.mkdir()
    for index in range(6):  # incompressible, so the tar and the gzip both span several 1 MiB blocks
        (src / f"data-{index}.bin").write_bytes(hashlib.sha256(str(index).encode()).digest() * (40 * 1024))
    (src / "Procfile").write_text("web: ./serve\n")


def test_pack_gives_the_same_bytes_whatever_tar_may_write_ahead(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from dynod.builds import slug

    src = tmp_path / "src"
    _tree_over_a_few_blocks(src)
    packed = []
    for ahead in (slug.PIPE_AHEAD_BYTES, slug.BLOCK_SIZE, 4096):
        monkeypatch.setattr(slug, "PIPE_AHEAD_BYTES", ahead)
        packed.append(pack_directory(src, tmp_path / f"out-{ahead}"))
    assert len({info.id for info in packed}) == 1
    assert len({info.path.read_bytes() for info in packed}) == 1
    assert packed[0].process_types == {"web": "./serve"}


def test_a_refusal_after_tar_ran_ahead_leaves_nothing(tmp_path: Path) -> None:
    # tar has written the whole tree into the pipe before the walk reaches the last member.
    src = tmp_path / "src"
    _tree_over_a_few_blocks(src)
    _setuid_file(src / "zz-tool")
    out = tmp_path / "out"
    with pytest.raises(UserError, match="'app/zz-tool' has the setuid"):
        pack_directory(src, out)
    assert list(out.iterdir()) == []


def test_an_index_from_before_the_blake3_digests_is_not_reused(tmp_path: Path) -> None:
    """A store upgraded in place holds indexes whose digests are sha256s, under the format string
    without ``digest=blake3``: the first pack after the upgrade compresses every block afresh
    (the same bytes), and writes an index the next one can use."""
    from dynod.builds import slug

    store = SlugStore(tmp_path / "slugs")
    src = tmp_path / "src"
    _venv_like(src, 3)
    first = store.store_directory(src)
    index = store.root / f"{first.id}.blocks"
    recorded = json.loads(index.read_text())
    raw = (store.root / f"{first.id}.tgz").read_bytes()
    old_blocks = []
    for digest, offset, length in recorded["blocks"]:
        part = zlib.decompressobj(-15).decompress(raw[offset:offset + length])
        assert digest == blake3(part).hexdigest()
        old_blocks.append([hashlib.sha256(part).hexdigest(), offset, length])
    old_format = slug.block_format().replace(" digest=blake3", "")
    index.write_text(json.dumps({"format": old_format, "blocks": old_blocks}))
    asked: list[str] = []
    real_blocks_of = store._blocks_of

    @contextlib.contextmanager
    def watching(slug_id: str | None) -> Iterator[Callable[[str], bytes | None] | None]:
        with real_blocks_of(slug_id) as reuse:
            asked.append("index used" if reuse is not None else "no index")
            yield reuse

    store._blocks_of = watching  # type: ignore[method-assign]
    (src / "app.py").write_text("print('v2')\n")
    reference = tmp_path / "reference"
    shutil.copytree(src, reference, symlinks=True)
    second = store.store_directory(src, reuse_from=first.id)
    assert asked == ["no index"]
    assert second.id == slug.pack_directory(reference, tmp_path / "afresh").id
    assert json.loads((store.root / f"{second.id}.blocks").read_text())["format"] == slug.block_format()


def test_a_store_opened_removes_a_tree_a_stopped_dynod_left_waiting_for_its_slug(app_dir: Path, tmp_path: Path) -> None:
    store = SlugStore(tmp_path / "slugs")
    tree = store.adopt_tree(app_dir, *owner())  # then dynod died before the pack ended
    assert tree.dir is not None
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(tree.dir, (old, old))
    fresh = store.adopt_tree(shutil.copytree(tree.app, tmp_path / "again", symlinks=True), *owner())
    SlugStore(tmp_path / "slugs")
    assert not tree.dir.exists()
    assert fresh.dir is not None and fresh.dir.is_dir()  # a deploy packing now keeps its tree
