"""Builds as records: what was built, from which source, how it ended, and its output.

A build's output is a stream of lines (split and framed by build_output.py), forwarded to
whoever watches, and kept in a log file next to the record so ``dynoctl builds:output`` can
replay it. Memory stays bounded whatever a buildpack prints: the log file stops growing at its cap.

Records live as one JSON file per build under ``state_dir/builds/<app>/``: builds are not part
of the release ledger (a failed build makes no release) and their output is too big for it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

import trio

from ..errors import NotFound, UserError
from ..model import check_app_name
from .archive import remove_tree, unpack_source
from .build_output import detail, seconds, step
from .buildpack import DEFAULT_TIMEOUT, compile_app
from .restore import RESTORE_DIR, PreparedRestores, StartSoon

__all__ = ["BuildStore", "Builder", "unpack_source"]

log = logging.getLogger("dynod.builds")

DEFAULT_LOG_CAP_BYTES = 8 * 1024 * 1024  # what builds:output keeps of one build's output


@dataclass(frozen=True, slots=True)
class BuildRecord:
    id: str
    app: str
    status: str  # "pending" while it runs, then "succeeded" or "failed"
    source: str  # "git" or "tarball"
    source_version: str | None  # the pushed commit for git builds
    created_at: float
    finished_at: float | None = None
    buildpacks: list[str] = field(default_factory=list)
    process_types: dict[str, str] = field(default_factory=dict)
    slug_id: str | None = None
    release: int | None = None
    error: str | None = None  # the one-line reason a failed build failed
    user: str | None = None  # who started it: an SSH key id, "local", "api"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class BuildLog:
    """One build's output: each line is written to its log file (up to a cap) and forwarded."""

    def __init__(self, path: Path, *, forward: Callable[[str], None] | None = None,
                 cap_bytes: int = DEFAULT_LOG_CAP_BYTES) -> None:
        self.path = path
        self._forward = forward
        self._cap = cap_bytes
        self._written = 0
        self._truncated = False
        self._file: IO[str] | None = path.open("a", encoding="utf-8", errors="replace")

    def line(self, text: str) -> None:
        if self._forward is not None:
            self._forward(text)
        if self._file is None or self._truncated:
            return
        size = len(text) + 1
        if self._written + size > self._cap:
            # The watcher still sees everything; the replay notes where it stopped.
            self._file.write(f"[dynod: output after {self._written} bytes was not kept]\n")
            self._truncated = True
            return
        self._file.write(text + "\n")
        self._written += size

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class BuildStore:
    """Build records and their output under ``state_dir/builds/<app>/<id>.json|.log``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, app: str) -> Path:
        return self.root / check_app_name(app)

    def create(self, app: str, *, source: str, source_version: str | None = None,
               user: str | None = None) -> BuildRecord:
        directory = self._dir(app)
        directory.mkdir(parents=True, exist_ok=True)
        # Time-ordered ids: listing by name lists by age, and ids stay unique without a counter.
        build_id = f"{time.time_ns():x}-{secrets.token_hex(4)}"
        record = BuildRecord(id=build_id, app=app, status="pending", source=source,
                             source_version=source_version, created_at=time.time(), user=user)
        self._write(record)
        return record

    def finish(self, record: BuildRecord, **changes: Any) -> BuildRecord:
        done = replace(record, finished_at=time.time(), **changes)
        self._write(done)
        return done

    def open_log(self, record: BuildRecord, forward: Callable[[str], None] | None = None,
                 cap_bytes: int = DEFAULT_LOG_CAP_BYTES) -> BuildLog:
        return BuildLog(self.log_path(record.app, record.id), forward=forward, cap_bytes=cap_bytes)

    def log_path(self, app: str, build_id: str) -> Path:
        return self._dir(app) / f"{_check_id(build_id)}.log"

    def get(self, app: str, build_id: str | None = None) -> BuildRecord:
        """One build; None: the newest."""
        if build_id is None:
            builds = self.list(app)
            if not builds:
                raise NotFound(f"App {app} has no builds yet; deploy it with git push or dynoctl deploy.")
            return builds[-1]
        path = self._dir(app) / f"{_check_id(build_id)}.json"
        try:
            return BuildRecord(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise NotFound(f"No build {build_id} for app {app}; list them with dynoctl builds.") from None

    def list(self, app: str) -> list[BuildRecord]:
        """Oldest first."""
        directory = self._dir(app)
        if not directory.is_dir():
            return []
        return [BuildRecord(**json.loads(p.read_text())) for p in sorted(directory.glob("*.json"))]

    def output(self, app: str, build_id: str | None = None) -> str:
        record = self.get(app, build_id)
        try:
            return self.log_path(app, record.id).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def delete_app(self, app: str) -> None:
        directory = self._dir(app)
        if directory.is_dir():
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()

    def _write(self, record: BuildRecord) -> None:
        path = self._dir(record.app) / f"{record.id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record.to_json(), sort_keys=True))
        os.replace(tmp, path)  # a reader never sees half a record


def _check_id(build_id: str) -> str:
    # Ids become file names: only the shape they are made in (hex time, '-', 8 hex) may get there.
    if not build_id or len(build_id) > 64 or not all(c in "0123456789abcdef-" for c in build_id):
        raise NotFound(f"No build {build_id!r}: build ids are like 18a3c0f2e1b4d000-1f2e3d4c.")
    return build_id


# --- one build, start to end -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildDirs:
    """A build's host directories: /app, /tmp/env and /buildpacks are per build, the cache per app."""

    root: Path
    app: Path
    env: Path
    buildpacks: Path
    cache: Path

    @classmethod
    def create(cls, work_root: Path, cache_root: Path, app: str, build_id: str, *, uid: int, gid: int
               ) -> BuildDirs:
        root = work_root / f"{check_app_name(app)}-{_check_id(build_id)}"
        dirs = cls(root=root, app=root / "app", env=root / "env", buildpacks=root / "buildpacks",
                   cache=cache_root / app)
        root.mkdir(parents=True, mode=0o755)
        for path in (dirs.app, dirs.env, dirs.buildpacks):
            path.mkdir(mode=0o755)
        dirs.cache.mkdir(parents=True, exist_ok=True, mode=0o755)
        os.chown(dirs.app, uid, gid)  # buildpacks run as the build uid, never root
        os.chown(dirs.cache, uid, gid)
        return dirs

    def remove(self) -> None:
        try:
            remove_tree(self.root)  # not shutil.rmtree: a build can nest deeper than its recursion
        except OSError as exc:  # the build's own outcome matters more than its leftovers
            log.warning("Could not remove the build directory %s: %s", self.root, exc)


class Slug(Protocol):
    id: str
    size: int


class Builder:
    """Runs builds start to end, one at a time per app, recording each and its output.

    The steps: unpack the source into a fresh /app, compile it with the buildpacks (in the
    container ``container_for`` makes for the build's directories), ``pack`` /app into a slug
    (it may move /app away, e.g. into the slug store as the slug's unpacked tree; it is told the
    process types the release will have, so it may boot them meanwhile),
    ``release`` it (the daemon makes the release and runs its release phase; returns its version).
    Any UserError on the way fails the build with that sentence; nothing is released then.
    A git push and a ``dynoctl deploy`` of the same app wait for each other here.

    With ``restores`` and a ``start_soon`` to run them, the app's cached venv is copied for its
    next build as soon as a build's container has exited (restore.py), and each build's /app gets
    the copy prepared for it.
    """

    def __init__(self, store: BuildStore, *, work_root: Path, cache_root: Path, buildpacks: list[Any],
                 stack: str, uid: int, gid: int, container_for: Callable[[BuildDirs], Any],
                 timeout: float | None = None, local_roots: tuple[Path, ...] = (),
                 restores: PreparedRestores | None = None, start_soon: StartSoon | None = None) -> None:
        self.store = store
        self.work_root = work_root
        self.cache_root = cache_root
        self.buildpacks = buildpacks
        self.stack = stack
        self.uid, self.gid = uid, gid
        self.container_for = container_for
        self.timeout = timeout
        self.local_roots = local_roots
        self.restores = restores if start_soon is not None else None
        self.start_soon = start_soon
        self._locks: dict[str, trio.Lock] = {}

    def statistics(self) -> dict[str, Any]:
        return {"apps_building": sorted(app for app, lock in self._locks.items() if lock.locked())}

    def forget_app(self, app: str) -> None:
        """apps:destroy: the app's build cache goes, so a new app of the same name starts cold."""
        if self.restores is not None:
            self.restores.forget(app)
        remove_tree(self.cache_root / check_app_name(app))
        self._locks.pop(app, None)

    async def build(self, app: str, archive: IO[bytes], *, config: dict[str, str], source: str,
                    source_version: str | None, user: str | None, output: Callable[[str], None],
                    pack: Callable[[Path, dict[str, str]], Awaitable[Slug]],
                    release: Callable[[BuildRecord, Any, Slug], Awaitable[int]],
                    app_buildpacks: list[str] | None = None) -> BuildRecord:
        record = self.store.create(app, source=source, source_version=source_version, user=user)
        log = self.store.open_log(record, forward=output)
        lock = self._locks.setdefault(app, trio.Lock())
        try:
            if lock.locked():
                log.line(step("Another build of this app is running; waiting for it to finish"))
            async with lock:
                dirs = BuildDirs.create(self.work_root, self.cache_root, app, record.id,
                                        uid=self.uid, gid=self.gid)
                try:
                    await trio.to_thread.run_sync(
                        lambda: unpack_source(archive, dirs.app, uid=self.uid, gid=self.gid))
                    restored = False

                    async def take_restore() -> None:
                        nonlocal restored
                        if self.restores is not None:
                            restored = await self.restores.take(app, dirs.app)

                    result = await compile_app(
                        dirs.app, container=self.container_for(dirs), buildpacks=self.buildpacks,
                        buildpacks_dir=dirs.buildpacks, config=config, cache_dir=dirs.cache,
                        env_dir=dirs.env, stack=self.stack, timeout=self.timeout or DEFAULT_TIMEOUT,
                        output=log.line, source_version=source_version, local_roots=self.local_roots,
                        app_buildpacks=app_buildpacks, after_slugignore=take_restore)
                    if restored:  # no Python buildpack ran to use it (or remove it)
                        await trio.to_thread.run_sync(remove_tree, dirs.app / RESTORE_DIR)
                    started = time.monotonic()
                    log.line(step("Compressing..."))
                    slug = await pack(dirs.app, dict(result.process_types))
                    log.line(detail(f"Done: {slug.size / (1024 * 1024):.1f} MB "
                                    f"({seconds(time.monotonic() - started)})"))
                    record = replace(record, buildpacks=result.buildpacks,
                                     process_types=result.process_types, slug_id=slug.id)
                    log.line(step("Launching..."))
                    version = await release(record, result, slug)
                    record = self.store.finish(record, status="succeeded", release=version)
                finally:
                    dirs.remove()
                    # The build container has exited, so the cache is what the next build will find.
                    # Copied now, after the release rather than beside the packing: the slug's fsync
                    # would wait for the copy's writes too (ext4 commits them in one journal).
                    if self.restores is not None and self.start_soon is not None:
                        self.restores.start(app, self.start_soon)
        except UserError as exc:
            log.line(f" !     {exc}")
            record = self.store.finish(record, status="failed", error=str(exc))
        except BaseException:
            # Cancelled (dynod stopping) or a bug: the record must not stay "pending" forever.
            record = self.store.finish(record, status="failed", error="The build was interrupted.")
            raise
        finally:
            log.close()
        return record
