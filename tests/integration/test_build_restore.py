"""The prepared restore (dynod/builds/restore.py) with the real Python buildpack, in a real (bwrap)
build container: the next build's copy of the cached venv, made between builds as the build uid.

pip installs from PyPI once per test (the cold build), so these tests need the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from dynod.builds.buildpack import BuildError, builtin_buildpacks
from dynod.builds.builds import Builder, BuildStore
from dynod.builds.restore import RESTORE_DIR, PreparedRestores
from dynod.builds.slug import pack_slug
from tests.integration.test_build_buildpacks import EXAMPLES, Build
from tests.integration.test_build_container import (
    BUILD_UID,
    BwrapBuildContainer,
    build_root,
    needs_stack,
    processes_of_uid,
)

pytestmark = [pytest.mark.integration, needs_stack]

APP = "cache"  # Build keeps its cache at <root>/cache: the app of that name, with <root> as the cache root
FLASK_INIT = "lib/python3.13/site-packages/flask/__init__.py"


@pytest.fixture
def build():
    before = set(processes_of_uid())
    with build_root() as root:
        yield Build(root)
    assert set(processes_of_uid()) - before == set(), "a build or a copy left processes behind"


def restores_for(build: Build, settle: float = 0) -> PreparedRestores:
    """No settling time by default: no dynos boot here."""
    return PreparedRestores(build.root / "restore", build.root, uid=BUILD_UID, gid=BUILD_UID, settle=settle)


def listing(path: Path) -> list[tuple[str, int, int, int, int, int]]:
    """Every path below ``path`` with its inode, size, mtime, ctime and mode: what the buildpack compares."""
    out = []
    for top, dirs, files in os.walk(path):
        for name in ["", *dirs, *files]:
            full = os.path.join(top, name) if name else top
            st = os.lstat(full)
            out.append((os.path.relpath(full, path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                        st.st_mode))
    return sorted(out)


def slug_members(app_dir: Path, work: Path) -> dict[str, tuple]:
    """The slug packed from ``app_dir``: each member's type, mode, size, link target, content and,
    inside the venv (the restored part), its mtime."""
    packed, _ = pack_slug(app_dir, work)
    members = {}
    with tarfile.open(packed.path) as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isreg() else b""
            mtime = member.mtime if member.name.startswith("app/.heroku/python") else None
            members[member.name] = (member.type, member.mode, member.size, member.linkname,
                                    hashlib.sha256(data).hexdigest(), mtime)
    packed.path.unlink()
    return members


async def cold_then_prepared(build: Build, restores: PreparedRestores) -> int:
    """A cold build, then the copy for the next one; returns the prepared venv's inode."""
    build.load(EXAMPLES / "python-flask")
    await build.compile()
    await _prepare(restores)
    return os.lstat(restores.root / APP / "venv").st_ino


def taking(restores: PreparedRestores, build: Build) -> Callable[[], Awaitable[None]]:
    """What Builder does between .slugignore and the buildpacks: the prepared copy into /app."""
    async def take() -> None:
        assert await restores.take(APP, build.dirs["app"]), "no copy was prepared"
    return take


async def _prepare(restores: PreparedRestores) -> None:
    async with trio.open_nursery() as nursery:  # returns once the copy has ended
        restores.start(APP, nursery.start_soon)


async def test_a_prepared_copy_gives_the_slug_a_copy_gives_and_leaves_the_cache_as_it_was(build: Build):
    restores = restores_for(build)
    prepared = await cold_then_prepared(build, restores)
    cached_venv = build.root / "cache/python/venv"
    cache_before = listing(cached_venv)
    assert (restores.root / APP / "listing").read_text().endswith("  -\n")

    # The warm build with the prepared copy: renamed into place, not copied.
    build.load(EXAMPLES / "python-flask")
    seen: list[bool] = []

    async def take_and_look() -> None:  # after .slugignore (it ignores README.md: the venv has some)
        seen.append(await restores.take(APP, build.dirs["app"]))
        seen.append((build.dirs["app"] / RESTORE_DIR / "python/venv").is_dir())
        seen.append((restores.root / APP).exists())

    await build.compile(after_slugignore=take_and_look)
    assert seen == [True, True, False]
    assert "Restoring cached packages" in build.output and "skipping pip" in build.output
    app = build.dirs["app"]
    assert os.lstat(app / ".heroku/python").st_ino == prepared
    assert not (app / RESTORE_DIR).exists()
    assert listing(cached_venv) == cache_before
    with_prepared = slug_members(app, build.root / "work")

    # The same warm build copying as before: the same slug (files, modes, links, contents, the
    # venv's mtimes), and no inode shared with the cache.
    build.load(EXAMPLES / "python-flask")
    await build.compile()
    assert "skipping pip" in build.output
    assert os.lstat(app / ".heroku/python").st_ino != prepared
    assert slug_members(app, build.root / "work") == with_prepared
    cached_inodes = {row[1] for row in listing(cached_venv)}
    assert cached_inodes.isdisjoint(row[1] for row in listing(app / ".heroku/python"))
    assert build.run_in_app("python -c 'import flask; print(flask.__version__)'").strip() == "3.1.1"


async def test_a_hook_writing_in_the_prepared_venv_changes_neither_the_cache_nor_the_next_copy(build: Build):
    restores = restores_for(build)
    await cold_then_prepared(build, restores)
    cached_init = build.root / "cache/python/venv" / FLASK_INIT
    original = cached_init.read_bytes()
    hook = {"bin/post_compile": f"#!/bin/sh\necho '# changed by the hook' >> .heroku/python/{FLASK_INIT}\n"}

    build.load(EXAMPLES / "python-flask")
    for name, text in hook.items():
        path = build.dirs["app"] / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
        os.lchown(path.parent, BUILD_UID, BUILD_UID)
        os.lchown(path, BUILD_UID, BUILD_UID)
    await build.compile(after_slugignore=taking(restores, build))
    assert (build.dirs["app"] / ".heroku/python" / FLASK_INIT).read_bytes().endswith(b"# changed by the hook\n")
    assert cached_init.read_bytes() == original

    # A failed build (its hook fails after writing in the venv) leaves the cache as it was too.
    await _prepare(restores)
    build.load(EXAMPLES / "python-flask")
    hook_path = build.dirs["app"] / "bin/post_compile"
    hook_path.parent.mkdir(exist_ok=True)
    hook_path.write_text(f"#!/bin/sh\necho '# changed' >> .heroku/python/{FLASK_INIT}\nexit 3\n")
    hook_path.chmod(0o755)
    os.lchown(hook_path.parent, BUILD_UID, BUILD_UID)
    os.lchown(hook_path, BUILD_UID, BUILD_UID)
    cache_before = listing(build.root / "cache/python/venv")
    with pytest.raises(BuildError):
        await build.compile(after_slugignore=taking(restores, build))
    assert "bin/post_compile failed (exit 3)" in build.output
    assert listing(build.root / "cache/python/venv") == cache_before
    assert cached_init.read_bytes() == original


async def test_a_cache_changed_since_the_copy_is_copied_again(build: Build):
    restores = restores_for(build)
    prepared = await cold_then_prepared(build, restores)
    cached_init = build.root / "cache/python/venv" / FLASK_INIT
    # The cache changed after the copy was made (the same size and mtime: only its ctime tells).
    st = cached_init.stat()
    data = cached_init.read_bytes()
    cached_init.write_bytes(data.replace(b"__version__", b"__VERSION__", 1))
    os.utime(cached_init, ns=(st.st_atime_ns, st.st_mtime_ns))

    build.load(EXAMPLES / "python-flask")
    await build.compile(after_slugignore=taking(restores, build))
    app = build.dirs["app"]
    assert "Restoring cached packages" in build.output
    assert os.lstat(app / ".heroku/python").st_ino != prepared  # copied from the cache as it is now
    assert b"__VERSION__" in (app / ".heroku/python" / FLASK_INIT).read_bytes()
    assert not (app / RESTORE_DIR).exists()


async def test_the_copy_follows_no_link_out_of_the_cache(build: Build):
    """The cache is the app's: its python/ turned into a link to another tree must not be copied
    (the copy runs on the host), and so nothing is prepared."""
    restores = restores_for(build)
    other = build.root / "elsewhere/python/venv"
    other.mkdir(parents=True)
    (other / "secret").write_text("not this app's\n")
    os.chmod(other / "secret", 0o600)
    cache = build.root / "cache"
    (cache / "python").symlink_to(other.parent)
    await _prepare(restores)
    assert not (restores.root / APP).exists()
    build.load(EXAMPLES / "python-flask")
    assert not await restores.take(APP, build.dirs["app"])
    assert not (build.dirs["app"] / RESTORE_DIR).exists()

    # A link as the venv itself: the same.
    (cache / "python").unlink()
    (cache / "python").mkdir()
    (cache / "python/venv").symlink_to(other)
    await _prepare(restores)
    assert not await restores.take(APP, build.dirs["app"])


async def test_a_copy_the_build_uid_cannot_make_prepares_nothing(build: Build):
    restores = restores_for(build)
    build.load(EXAMPLES / "python-flask")
    await build.compile()
    unreadable = build.root / "cache/python/venv" / FLASK_INIT
    unreadable.chmod(0)
    await _prepare(restores)
    assert not (restores.root / APP).exists()  # the half-made copy went with it
    build.load(EXAMPLES / "python-flask")
    assert not await restores.take(APP, build.dirs["app"])


async def test_a_source_with_its_own_restore_dir_never_passes_it_for_a_prepared_copy(build: Build):
    """The name is dynod's: a source's own is removed, with or without a copy to give, so a forged
    listing and venv (or a link into the cache) never reach bin/compile as dynod's."""
    restores = restores_for(build)
    prepared = await cold_then_prepared(build, restores)
    flask = {p.name: p.read_text() for p in (EXAMPLES / "python-flask").iterdir() if p.is_file()}
    build.load({**flask, f"{RESTORE_DIR}/python/listing": "forged\n", f"{RESTORE_DIR}/python/venv/x": "forged"})
    assert await restores.take(APP, build.dirs["app"])
    assert os.lstat(build.dirs["app"] / RESTORE_DIR / "python/venv").st_ino == prepared  # dynod's copy
    assert not (build.dirs["app"] / RESTORE_DIR / "python/venv/x").exists()

    # Nothing prepared now: the source's own goes all the same, and nothing is given.
    build.load({**flask, f"{RESTORE_DIR}/python/listing": "forged\n"})
    os.symlink(build.root / "cache/python/venv", build.dirs["app"] / RESTORE_DIR / "python/venv")
    assert not await restores.take(APP, build.dirs["app"])
    assert not os.path.lexists(build.dirs["app"] / RESTORE_DIR)
    assert (build.root / "cache/python/venv").is_dir()  # the link went, not what it pointed at


def _large_cached_venv(build: Build) -> None:
    """20,000 small files: a copy long enough to be stopped while cp writes."""
    venv = build.root / "cache/python/venv"
    for d in range(40):
        (venv / f"d{d}").mkdir(parents=True)
        for f in range(500):
            (venv / f"d{d}/f{f}").write_bytes(b"x")


async def _copy_writing(restores: PreparedRestores) -> None:
    copied = restores.root / APP / "venv"
    with trio.fail_after(60):
        while not (copied.is_dir() and any(copied.iterdir())):  # cp has begun writing
            await trio.sleep(0.001)


async def test_forget_during_a_long_copy_kills_it_and_removes_the_stage(build: Build):
    """apps:destroy while cp is writing: the whole copy's process group goes first, then the stage
    (an orphaned cp would go on writing in it as it was removed)."""
    restores = restores_for(build)
    _large_cached_venv(build)
    async with trio.open_nursery() as nursery:
        restores.start(APP, nursery.start_soon)
        await _copy_writing(restores)
        assert processes_of_uid(), "no copy running as the build uid"
        restores.forget(APP)
    assert not (restores.root / APP).exists()
    # (the fixture checks that no process of the build uid is left)


async def test_a_copy_cancelled_with_its_nursery_kills_it_and_removes_the_stage(build: Build):
    """dynod stopping mid-copy: the same, through an outer cancel (trio's Cancelled in a group)."""
    restores = restores_for(build)
    _large_cached_venv(build)
    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            restores.start(APP, nursery.start_soon)
            await _copy_writing(restores)
            outer.cancel()
    assert not (restores.root / APP).exists()
    assert not restores._copying


async def test_forget_stops_a_copy_and_removes_what_was_prepared(build: Build):
    restores = restores_for(build)
    await cold_then_prepared(build, restores)
    restores.forget(APP)
    assert not (restores.root / APP).exists()
    restores.settle = 60  # the next copy waits long enough to be stopped while it settles
    async with trio.open_nursery() as nursery:
        restores.start(APP, nursery.start_soon)
        await trio.sleep(0)
        restores.forget(APP)  # while it waits to settle: it stops there
    assert not (restores.root / APP).exists()
    restores.settle = 0
    async with trio.open_nursery() as nursery:
        restores.start(APP, nursery.start_soon)
        while not (restores.root / APP).exists():  # the stage is made just before cp starts
            await trio.sleep(0.001)
        restores.forget(APP)  # while copying (the fixture checks no cp is left running)
    assert not (restores.root / APP).exists()
    build.load(EXAMPLES / "python-flask")
    assert not await restores.take(APP, build.dirs["app"])  # nothing running to wait for, nothing there


async def test_builder_prepares_after_each_build_and_hands_the_copy_to_the_next(build: Build):
    """Builder's side: the copy starts once a build ended, and the next build of the app takes it."""
    root = build.root
    work = root / "build-work"
    work.mkdir()
    restores = PreparedRestores(root / "restore", root / "build-cache", uid=BUILD_UID, gid=BUILD_UID, settle=0)
    source = root / "source.tar"
    subprocess.run(["tar", "-cf", str(source), "-C", str(EXAMPLES / "python-flask"), "."], check=True)
    taken: list[bool] = []

    class Container(BwrapBuildContainer):
        async def run(self, argv, **kwargs):  # the first run (detect) sees /app as the buildpacks will
            if len(taken) < len(started):
                taken.append((self.app_dir / RESTORE_DIR / "python/venv").is_dir())
            return await super().run(argv, **kwargs)

    started: list[object] = []

    def container_for(dirs):
        started.append(dirs)
        return Container(app_dir=dirs.app, cache_dir=dirs.cache, env_dir=dirs.env, buildpacks_dir=dirs.buildpacks)

    async def pack(app_dir: Path, process_types: dict[str, str]):
        class Packed:
            id = "0" * 64
            size = 1
        return Packed()

    async def release(record, result, slug) -> int:
        return 1

    async with trio.open_nursery() as nursery:
        builder = Builder(BuildStore(root / "builds"), work_root=work, cache_root=root / "build-cache",
                          buildpacks=builtin_buildpacks(), stack="debian-13", uid=BUILD_UID, gid=BUILD_UID,
                          container_for=container_for, restores=restores, start_soon=nursery.start_soon)
        for _ in range(2):
            lines: list[str] = []
            with source.open("rb") as archive:
                record = await builder.build("flask", archive, config={}, source="tarball", source_version=None,
                                             user=None, output=lines.append, pack=pack, release=release)
            assert record.status == "succeeded", "\n".join(lines)
            await trio.testing.wait_all_tasks_blocked()  # the copy has begun: the next build waits for it
        assert taken == [False, True]  # the second build waited for the copy the first one began
        assert "skipping pip" in "\n".join(lines)
        builder.forget_app("flask")
    assert not (root / "restore/flask").exists()
    shutil.rmtree(work)


async def test_a_build_before_the_copy_began_copies_for_itself(build: Build):
    """A push right after the last build (the copy still settling) does not wait for the copy."""
    restores = restores_for(build, settle=60)
    build.load(EXAMPLES / "python-flask")
    await build.compile()
    build.load(EXAMPLES / "python-flask")
    async with trio.open_nursery() as nursery:
        restores.start(APP, nursery.start_soon)
        with trio.fail_after(10):  # not the 60 s of settling
            assert not await restores.take(APP, build.dirs["app"])
    assert not (restores.root / APP).exists()
    await build.compile()
    assert "skipping pip" in build.output
