"""Deploys: source in (git push or `dynoctl deploy`), buildpacks, slug, release, release phase.

This is where the build parts (dynod.builds) meet the platform: the Builder compiles the source
in a build container made by the dyno manager, the slug goes into the slug store, the release into
the ledger, and a `release:` process type, when the app has one, runs in a one-off dyno before any
dyno moves to the new release (Heroku's release phase). A failed release phase leaves the release
"failed" and every dyno on the release before it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import trio

from .builds.buildpack import BuildError, prepared_builtins
from .builds.builds import BuildDirs, Builder, BuildRecord, BuildStore
from .builds.container import SpawnerBuildContainer
from .builds.git import create_repo, delete_repo
from .builds.keys import AuthorizedKeys
from .builds.restore import PreparedRestores
from .builds.slug import SlugInfo
from .errors import UserError
from .manager.attach import AttachedSession
from .manager.early_boot import EarlyBoot
from .model import Release
from .platform.rules import build_release_description

if TYPE_CHECKING:  # the platform makes its Deploys: imported for the type only
    from .platform import Platform

RELEASE_TYPE = "release"
log = logging.getLogger("dynod.deploys")


class Deploys:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        s = platform.settings
        self.settings = s
        self.repos_dir = s.state_dir / "repos"
        self.store = BuildStore(s.state_dir / "builds")
        self.keys = AuthorizedKeys(s.state_dir / "ssh" / "authorized_keys", serve_argv=[
            sys.executable, "-m", "dynod.builds.git", "serve", "--repos", str(self.repos_dir)])
        for directory in (self.repos_dir, s.state_dir / "build-work", s.state_dir / "build-cache"):
            directory.mkdir(parents=True, exist_ok=True)
        self.builder = Builder(
            self.store, work_root=s.state_dir / "build-work", cache_root=s.state_dir / "build-cache",
            buildpacks=prepared_builtins(s.state_dir / "builtin-buildpacks"),
            stack=s.stack, uid=s.dynos.uid, gid=s.dynos.gid,
            container_for=self._container, timeout=s.builds.timeout,
            local_roots=tuple(Path(p) for p in s.builds.local_buildpack_roots),
            restores=PreparedRestores(s.state_dir / "build-restore", s.state_dir / "build-cache",
                                      uid=s.dynos.uid, gid=s.dynos.gid),
            start_soon=lambda task, *args: self.platform.manager.start_soon(task, *args))
        self._stack_path: Path | None = None
        self._fail_interrupted()

    def _fail_interrupted(self) -> None:
        """A build or release phase that was running when dynod last stopped ends failed, not pending.

        Nothing in this dynod runs them (its build containers died with the old one or are killed
        as stale cgroups when the manager starts), so "pending" would never change by itself.
        """
        ledger = self.platform.ledger
        for app in ledger.list_apps():
            try:
                records = self.store.list(app.name)
            except (OSError, ValueError, TypeError) as exc:  # a damaged record must not stop dynod
                log.warning("build records of %s unreadable: %s", app.name, exc)
                records = []
            for record in records:
                if record.status == "pending":
                    self.store.finish(record, status="failed",
                                      error="dynod stopped during the build: build again.")
                    log.warning("build %s of %s was interrupted: marked failed", record.id, app.name)
            for release in ledger.list_releases(app.name):
                if release.status == "pending":
                    ledger.set_release_status(app.name, release.version, "failed")
                    log.warning("release v%s of %s was interrupted in its release phase: marked failed",
                                release.version, app.name)

    def _container(self, dirs: BuildDirs) -> SpawnerBuildContainer:
        assert self._stack_path is not None
        return SpawnerBuildContainer(self.platform.manager, self._stack_path, dirs.root.name, dirs.app,
                                     dirs.cache, dirs.env, dirs.buildpacks)

    # -- apps ------------------------------------------------------------------------------------
    def app_created(self, app: str) -> None:
        create_repo(self.repos_dir, app, api_socket=self.settings.api_socket)

    def app_destroyed(self, app: str) -> None:
        delete_repo(self.repos_dir, app)
        self.store.delete_app(app)

    # -- builds ----------------------------------------------------------------------------------
    async def build(self, app: str, archive: IO[bytes], *, source: str, source_version: str | None,
                    user: str | None, output: Callable[[str], None]) -> dict[str, Any]:
        platform = self.platform
        platform.ledger.get_app(app)
        self._stack_path = await trio.to_thread.run_sync(
            platform.stacks.ensure, self.settings.stack, lambda line: None)
        current = platform.ledger.current_release(app)
        config = dict(current.config) if current else {}
        platform.logs.emit(app, "dynod", "api", f"Build started by {user or 'dynoctl'}")

        early: EarlyBoot | None = None

        async def pack(app_dir: Path, process_types: dict[str, str]) -> SlugInfo:
            nonlocal early
            dynos = self.settings.dynos
            limit = self.settings.builds.slug_limit_mb << 20
            # Checked against the slug rules and moved into the store first: the build's /app
            # becomes the slug's unpacked tree for its dynos (no copy, no second unpack), and they
            # boot from it while it packs (early boot: manager/early_boot.py).
            tree = await trio.to_thread.run_sync(
                lambda: platform.slugs.adopt_tree(app_dir, dynos.uid, dynos.gid, limit_bytes=limit))
            if tree.dir is not None:
                early = platform.manager.boot_early(app, tree.dir, process_types)
            try:
                # The app's current slug lends its compressed blocks where the new tar is the same
                # (an unchanged venv): the same bytes as packing afresh, without compressing them.
                packed = await trio.to_thread.run_sync(lambda: platform.slugs.store_tree(
                    tree, limit_bytes=limit, reuse_from=current.slug_id if current else None))
                if early is not None:  # they mount the tree by its name: renamed only once they have
                    await early.wait_mounted()
                kept = await trio.to_thread.run_sync(platform.slugs.keep_tree, tree, packed.id)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._end_early(early)
                    await trio.to_thread.run_sync(platform.slugs.discard_tree, tree)
                raise
            if not kept and tree.dir is not None:  # the store had this slug's tree: this one is a copy
                with trio.CancelScope(shield=True):
                    await self._end_early(early)
                    await trio.to_thread.run_sync(platform.slugs.discard_tree, tree)
            elif early is not None:
                early.packed(packed.id)
            if packed.size > 300 << 20:
                output(f"       Warning: the slug is {packed.size >> 20} MB; over 300 MB slows every "
                       "dyno start. Add large files that need not ship to .slugignore.")
            return packed

        async def release(record: BuildRecord, result: Any, slug: SlugInfo) -> int:
            described = build_release_description(source_version, slug.id)
            # The config as it is now, not as it was when the build began: a config:set made during
            # the build must not be undone by the deploy.
            latest = platform.ledger.current_release(app)
            try:
                version = await self.release(app, slug_id=slug.id, process_types=dict(result.process_types),
                                             config=dict(latest.config) if latest else config,
                                             description=described, output=output)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._end_early(early)
                raise
            if early is not None:  # the release's reconcile takes what fits; the rest is killed
                with trio.CancelScope(shield=True):
                    await early.settle()
            return version

        try:
            record = await self.builder.build(app, archive, config=config, source=source,
                                              source_version=source_version, user=user, output=output,
                                              pack=pack, release=release,
                                              app_buildpacks=platform.ledger.get_buildpacks(app))
        finally:
            if early is not None and not early.ended:  # failed or cancelled after its pack: none of it runs
                with trio.CancelScope(shield=True):
                    await early.end()
        if record.status == "succeeded":
            platform.logs.emit(app, "dynod", "api", "Build succeeded")
        else:
            # The log has none of the build's output "above" it (Heroku: "check your build output").
            why = (record.error or "").removesuffix(" see the output above.").rstrip(";")
            platform.logs.emit(app, "dynod", "api", f"Build failed{': ' + why if why else ''} -- check the build's "
                               f"output: dynoctl builds:output {record.id} -a {app}")
        return {**record.to_json(), "web_url": platform.web_url(app)}

    @staticmethod
    async def _end_early(early: EarlyBoot | None) -> None:
        if early is not None:
            await early.end()

    async def release(self, app: str, *, slug_id: str | None, process_types: dict[str, str],
                      config: dict[str, str], description: str,
                      output: Callable[[str], None] | None = None) -> int:
        """Make a release; with a release phase, it becomes current only once that succeeds."""
        platform = self.platform
        if RELEASE_TYPE not in process_types:
            return platform.release(app, slug_id=slug_id, config=config, process_types=process_types,
                                    description=description).version
        pending = platform.ledger.create_release(app, slug_id=slug_id, config=config, process_types=process_types,
                                                 description=description, status="pending")
        say = output or (lambda line: None)
        say(f"-----> Running release command: {process_types[RELEASE_TYPE]}")
        code = await self._release_phase(app, pending, say)
        if code != 0:
            platform.ledger.set_release_status(app, pending.version, "failed")
            platform.logs.emit(app, "dynod", "api", f"Release v{pending.version} failed: release command "
                                                    f"exited with status {code}")
            raise BuildError(f"Release phase failed (exit {code}): v{pending.version} is not released and the "
                             "running dynos stay on the release before it; fix the release command and deploy again.")
        latest = platform.ledger.current_release(app)
        platform.ledger.set_release_status(app, pending.version, "succeeded")
        version = pending.version
        if latest is not None and latest.version > pending.version:
            # A config change was released (on the old slug) while the release phase ran: it is the
            # newer release, so carry this deploy's code forward with that config.
            version = platform.ledger.create_release(app, slug_id=slug_id, config=dict(latest.config),
                                                     process_types=process_types, description=description).version
        platform.logs.emit(app, "dynod", "api", f"Release v{version} created: {description}")
        platform.manager.reset_crashes(app)
        platform.manager.wake()
        return version

    async def _release_phase(self, app: str, release: Release, say: Callable[[str], None]) -> int:
        platform = self.platform
        name = f"{RELEASE_TYPE}.{platform.ledger.next_run_number(app)}"
        live = await platform.manager.start(app, RELEASE_TYPE, name, release, "standard-1X",
                                            release.process_types[RELEASE_TYPE], stdio="pipes", attached=True)
        session = AttachedSession(live, platform.manager, platform.logs)
        await session.close_stdin()
        partial = b""
        while (chunk := await session.receive()) is not None:
            *lines, partial = (partial + chunk[1]).split(b"\n")
            for line in lines:
                say("       " + line.decode(errors="replace"))
        if partial:
            say("       " + partial.decode(errors="replace"))
        return await session.wait()

    async def release_after_config_change(self, app: str, *, release: Release | None,
                                          config: dict[str, str], description: str) -> None:
        """A config change makes a release; with a release phase it runs in the background."""
        types = release.process_types if release else {}
        slug_id = release.slug_id if release else None
        if RELEASE_TYPE in types and slug_id is not None:
            self.platform.manager.start_soon(self._background_release, app, slug_id, types, config, description)
        else:
            self.platform.release(app, slug_id=slug_id, config=config, process_types=types,
                                  description=description)

    async def _background_release(self, app: str, slug_id: str, types: dict[str, str], config: dict[str, str],
                                  description: str) -> None:
        try:
            await self.release(app, slug_id=slug_id, process_types=types, config=config, description=description,
                               output=lambda line: self.platform.logs.emit(app, "dynod", "release", line))
        except UserError as exc:
            self.platform.logs.emit(app, "dynod", "release", str(exc))
        except Exception:  # the manager's nursery runs this: a bug here must not stop the dynos
            log.exception("release phase of %s", app)
            self.platform.logs.emit(app, "dynod", "release", "Error: the release phase failed inside dynod; "
                                                               "the dynos stay on the previous release.")

    # -- queries ---------------------------------------------------------------------------------
    def list_builds(self, app: str) -> list[dict[str, Any]]:
        self.platform.ledger.get_app(app)
        return [record.to_json() for record in self.store.list(app)]

    def build_output(self, app: str, build_id: str | None) -> str:
        self.platform.ledger.get_app(app)
        return self.store.output(app, build_id)

