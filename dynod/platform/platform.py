"""The daemon's platform: the API's calls carried out on the ledger, dynos, logs and routes.

``Platform`` implements ``dynod.api.service.PlatformService``. What a call may do is decided in
``rules`` (a config change makes a release; a rollback is a new release with an old slug and
config; a scale names a process type of the current release); this class reads what the rules
need from the ledger, writes what they decided, and hands the running of dynos to the
DynoManager, logs to the LogStream and routes to the router.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from .. import __version__
from ..api.service import AttachedDyno, Json
from ..errors import NotFound, UserError
from ..ledger import Ledger
from ..manager.dynos import ONE_OFF_TYPE, DynoManager, LiveDyno
from ..model import DEFAULT_SIZE, App, DynoRecord, DynoState, Release, check_config_var_name, dyno_size
from ..router.routes import AppRoute, DynoRoute, normalize_domain
from ..router.snapshots import RoutesSnapshot
from ..settings import Settings
from . import rules
from .addon_calls import AddonCalls
from .rules import rfc3339


def host_memory_mb() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)


class Platform(AddonCalls):
    def __init__(self, settings: Settings, *, ledger: Ledger, manager: DynoManager, logs: Any, slugs: Any,
                 stacks: Any, routes_changed: Callable[[], None], request_shutdown: Callable[[bool], None]
                 ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.manager = manager
        self.logs = logs
        self.slugs = slugs
        self.stacks = stacks
        self.routes_changed = routes_changed
        self._request_shutdown = request_shutdown
        self._started_at = time.time()
        from ..deploys import Deploys

        self.deploys = Deploys(self)
        self.acm: Any = None  # the CertManager (dynod.acm): set by the daemon when the router runs
        self.addons: Any = None  # dynod.addons.Addons: set by the daemon
        # Set by the daemon (docs/metrics.md, docs/dashboard.md): the API reads them.
        self.metrics: Any = None  # dynod.metrics.Metrics
        self.prometheus = False  # [metrics] prometheus: GET /metrics served
        self.dashboard_url: str | None = None  # the TCP listener's address with its token
        # Set by the daemon (docs/scheduler.md, docs/autoscaling.md): the API reads them.
        self.scheduler: Any = None  # dynod.scheduler.Scheduler
        self.autoscaler: Any = None  # dynod.autoscale.Autoscaler

    # -- helpers -----------------------------------------------------------------------------
    def web_url(self, app: str) -> str:
        listen = self.settings.router.http[0] if self.settings.router.http else ":80"
        port = listen.rsplit(":", 1)[-1]
        suffix = "" if port == "80" else f":{port}"
        return f"http://{app}.{self.settings.router.base_domain}{suffix}/"

    def _app_json(self, app: App) -> Json:
        release = self.ledger.current_release(app.name)
        return {
            "id": str(app.id), "name": app.name, "created_at": rfc3339(app.created_at),
            "web_url": self.web_url(app.name), "stack": self.settings.stack, "maintenance": app.maintenance,
            "routing_policy": app.routing_policy,
            "released_at": rfc3339(release.created_at) if release else None,
            "current_release": release.version if release else None,
        }

    def _release_json(self, release: Release, current: int | None) -> Json:
        return {
            "version": release.version, "description": release.description,
            "created_at": rfc3339(release.created_at), "status": release.status,
            "current": release.version == current,
            "slug": {"id": release.slug_id} if release.slug_id else None,
            "process_types": release.process_types, "config_var_names": sorted(release.config),
            "addons": [{"name": ref.addon, "attachment": ref.attachment, "plan": {"name": f"{ref.service}:{ref.plan}"}}
                       for ref in release.addons],
        }

    def _dyno_json(self, record: DynoRecord) -> Json:
        return {
            "name": record.name, "type": record.type, "state": str(record.state), "size": record.size,
            "command": record.command, "release": {"version": record.release},
            "created_at": rfc3339(record.created_at), "updated_at": rfc3339(record.state_changed_at),
        }

    def _current(self, app: str) -> Release:
        release = self.ledger.current_release(app)
        if release is None or release.slug_id is None:
            raise UserError(f"{app} has no deployed code yet: deploy first (dynoctl deploy DIR -a {app}).")
        return release

    def release(self, app: str, *, slug_id: str | None, config: dict[str, str],
                process_types: dict[str, str], description: str) -> Release:
        """Make a succeeded release now and move the app's dynos to it (deploys without a release
        phase, config changes, slug releases and rollbacks all end here)."""
        release = self.ledger.create_release(app, slug_id=slug_id, config=config,
                                             process_types=process_types, description=description)
        self.addon_released(release)
        return release

    # -- apps --------------------------------------------------------------------------------
    async def list_apps(self) -> list[Json]:
        return [self._app_json(a) for a in self.ledger.list_apps()]

    async def create_app(self, name: str | None) -> Json:
        if name is None:
            name = rules.generated_app_name({a.name for a in self.ledger.list_apps()}, random.SystemRandom())
        app = self.ledger.create_app(name)
        # Heroku makes v1 "Initial release" at creation, so config changes have a base to copy.
        self.ledger.create_release(name, slug_id=None, config={}, process_types={},
                                   description="Initial release")
        self.deploys.app_created(name)
        self.logs.emit(name, "dynod", "api", "Created app")
        # The router knows it from now on: a request gets Heroku's "no web dynos running" (H14),
        # not the unknown host's 404, until its first web dyno is up.
        self.routes_changed()
        return self._app_json(app)

    async def get_app(self, app: str) -> Json:
        return self._app_json(self.ledger.get_app(app))

    async def destroy_app(self, app: str) -> None:
        self.ledger.get_app(app)
        with self.manager.retiring_app(app):
            async with trio.open_nursery() as nursery:
                for live in self.manager.dynos_of(app):
                    nursery.start_soon(self.manager.stop, live, "app destroyed")
            self.manager.forget_restarts(app)
            slug_ids = {r.slug_id for r in self.ledger.list_releases(app) if r.slug_id}
            if self.addons is not None:
                await self.addons.app_destroyed(app)  # its own add-ons go, detached from other apps first
            await self._clear_keyrings(app)  # before its uid is free for the next app (dynod.linux.keyring)
            self.ledger.destroy_app(app)
            self.manager.health_checks.remove(app)
            self.deploys.app_destroyed(app)
            self.logs.forget_app(app)  # after the dynos stopped: a live pump would recreate its files
            if self.metrics is not None:
                self.metrics.forget_app(app)
            for part in (self.scheduler, self.autoscaler):  # their own stores: jobs, autoscaling policies
                if part is not None:
                    part.app_destroyed(app)
            # No trace for a new app of the same name to inherit: the build cache, and the slugs
            # (with their unpacked trees) that no other app's release names.
            self.deploys.builder.forget_app(app)
            in_use = {r.slug_id for other in self.ledger.list_apps() for r in self.ledger.list_releases(other.name)}
            for slug_id in slug_ids - in_use:
                self.slugs.remove(slug_id)
        self.routes_changed()
        if self.acm is not None:
            self.acm.app_destroyed(app)  # its ACM state goes now, its certificates are revoked

    async def _clear_keyrings(self, app: str) -> None:
        import logging

        from ..linux.spawner_client import SpawnerError

        d = self.settings.dynos
        uid = self.ledger.app_uid(app, d.uid_first, d.uid_count)
        problem = "the spawner did not answer within 10 s"
        with trio.move_on_after(10):
            try:
                await self.manager.spawner.clear_keyrings(uid, uid)
                return
            except SpawnerError as exc:
                problem = str(exc)
        # The app still goes; dynod's log says what may be left for its uid's next app.
        logging.getLogger("dynod").warning("keyrings of %s (uid %s) not cleared: %s", app, uid, problem)

    async def set_maintenance(self, app: str, on: bool) -> Json:
        result = self._app_json(self.ledger.set_maintenance(app, on))
        self.logs.emit(app, "dynod", "api", f"Maintenance mode {'enabled' if on else 'disabled'}")
        self.routes_changed()
        return result

    async def set_routing_policy(self, app: str, policy: str) -> Json:
        result = self._app_json(self.ledger.set_routing_policy(app, policy))
        self.logs.emit(app, "dynod", "api", f"Routing policy set to {policy}")
        self.routes_changed()
        return result

    # -- config vars -------------------------------------------------------------------------
    async def get_config(self, app: str) -> dict[str, str]:
        self.ledger.get_app(app)
        release = self.ledger.current_release(app)
        return dict(release.config) if release else {}

    async def update_config(self, app: str, changes: dict[str, str | None]) -> dict[str, str]:
        release = self.ledger.current_release(app)
        config = dict(release.config) if release else {}
        change = rules.config_change(config, changes)
        if change is None:
            return config
        await self.deploys.release_after_config_change(app, release=release, config=change.config,
                                                       description=change.description)
        return change.config

    # -- buildpacks ---------------------------------------------------------------------------
    async def get_buildpacks(self, app: str) -> list[str]:
        return self.ledger.get_buildpacks(app)

    async def set_buildpacks(self, app: str, urls: list[str]) -> list[str]:
        """Replace the app's buildpack list; each must be one a build can fetch (checked now, so a
        typo is refused here and not at the next push). Not a release, as on Heroku."""
        from pathlib import Path

        from ..builds.buildpack import BUILTIN_ORDER, check_buildpack_ref

        self.ledger.get_app(app)
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise UserError("Buildpacks must be a list of URLs or names.")
        roots = tuple(Path(p) for p in self.settings.builds.local_buildpack_roots)
        for url in urls:
            check_buildpack_ref(url, set(BUILTIN_ORDER), roots)
        if urls == self.ledger.get_buildpacks(app):
            return urls
        self.ledger.set_buildpacks(app, urls)
        self.logs.emit(app, "dynod", "api", f"Set buildpacks: {', '.join(urls)}" if urls else "Cleared buildpacks")
        return self.ledger.get_buildpacks(app)

    # -- slugs and releases ------------------------------------------------------------------
    async def upload_slug(self, app: str, chunks: AsyncIterator[bytes]) -> Json:
        self.ledger.get_app(app)
        info = await self.slugs.store_stream(chunks)
        return {"id": info.id, "size": info.size, "process_types": info.process_types}

    async def list_releases(self, app: str) -> list[Json]:
        current = self.ledger.current_release(app)
        number = current.version if current else None
        return [self._release_json(r, number) for r in self.ledger.list_releases(app)]

    async def get_release(self, app: str, version: int | None) -> Json:
        current = self.ledger.current_release(app)
        number = current.version if current else None
        if version is None:
            if current is None:
                raise NotFound(f"{app} has no releases yet.")
            return self._release_json(current, number)
        return self._release_json(self.ledger.get_release(app, version), number)

    async def create_release(self, app: str, slug_id: str, description: str | None) -> Json:
        self.ledger.get_app(app)
        info = self.slugs.get(slug_id)
        current = self.ledger.current_release(app)
        release = self.release(app, slug_id=info.id, config=dict(current.config) if current else {},
                               process_types=info.process_types,
                               description=description or rules.slug_release_description(info.id))
        return self._release_json(release, release.version)

    async def rollback(self, app: str, version: int | None) -> Json:
        current = self.ledger.current_release(app)
        if current is None:
            raise NotFound(f"{app} has no releases to roll back.")
        target_version = rules.rollback_version(app, current.version, version)
        try:
            target = self.ledger.get_release(app, target_version)
        except NotFound:
            raise NotFound(f"{app} has no release v{target_version}: see `dynoctl releases -a {app}`.") from None
        release = self.release(app, slug_id=target.slug_id, config=rules.rollback_config(target, current),
                               process_types=dict(target.process_types),
                               description=rules.rollback_description(target.version))
        result = self._release_json(release, release.version)
        warning = rules.rollback_addons_warning(app, target, current)
        if warning is not None:
            result["warning"] = warning
        return result

    # -- formation and dynos -----------------------------------------------------------------
    async def get_formation(self, app: str) -> list[Json]:
        release = self.ledger.current_release(app)
        types = release.process_types if release else {}
        return [{"type": f.type, "quantity": f.quantity, "size": f.size, "command": types.get(f.type, "")}
                for f in self.ledger.get_formation(app)]

    async def update_formation(self, app: str, updates: list[Json], *, by: str = "dynoctl") -> list[Json]:
        release = self.ledger.current_release(app)
        types = release.process_types if release else {}
        checked = rules.formation_changes(app, updates, types, self.ledger.get_formation(app))
        self._check_memory_for(app, checked)
        for type_, quantity, size in checked:
            self.ledger.set_formation(app, type_, quantity=quantity, size=size)
            if quantity is not None:
                self.logs.emit(app, "dynod", "api", f"Scaled {type_} to {quantity}"
                               + (f":{size}" if size else "") + f" by {by}")
        self.manager.wake_app(app)  # a scale wakes a sleeping app, as a request does
        self.manager.wake()
        return await self.get_formation(app)

    def _check_memory_for(self, app: str, changes: list[rules.FormationChange]) -> None:
        formations = {a.name: {f.type: (f.quantity, f.size) for f in self.ledger.get_formation(a.name)}
                      for a in self.ledger.list_apps()}
        before, after = rules.memory_before_and_after(formations, app, changes)
        rules.check_host_memory(before_mb=before, after_mb=after, host_mb=host_memory_mb(),
                                ratio=self.settings.dynos.memory_overcommit)

    async def list_dynos(self, app: str) -> list[Json]:
        self.ledger.get_app(app)
        seen: set[str] = set()
        result = []
        for live in self.manager.dynos_of(app):
            if not live.stopping:
                result.append(self._dyno_json(live.record))
                seen.add(live.name)
        for record in self.ledger.list_dynos(app, state=DynoState.CRASHED):
            if record.name not in seen:
                result.append(self._dyno_json(record))
        result += self._idle_dynos(app, seen)
        return sorted(result, key=lambda d: (d["type"], _index(d["name"])))

    def _idle_dynos(self, app: str, seen: set[str]) -> list[Json]:
        """A sleeping eco app's formation, as Heroku's API shows it: each slot in state "idle"."""
        since = self.manager.sleep.since.get(app)
        release = self.ledger.current_release(app)
        if since is None or release is None:
            return []
        return [{"name": name, "type": f.type, "state": "idle", "size": f.size,
                 "command": release.process_types.get(f.type, ""), "release": {"version": release.version},
                 "created_at": rfc3339(since), "updated_at": rfc3339(since)}
                for f in self.ledger.get_formation(app) if f.type in release.process_types
                for name in (f"{f.type}.{i}" for i in range(1, f.quantity + 1)) if name not in seen]

    def _select(self, app: str, target: str | None) -> list[LiveDyno]:
        self.ledger.get_app(app)
        dynos = [d for d in self.manager.dynos_of(app) if not d.stopping]
        if target is None:
            return dynos
        chosen = [d for d in dynos if d.name == target or (d.record.type == target and "." not in target)]
        if not chosen:
            raise NotFound(f"No dyno or process type {target!r} is running in {app}; see `dynoctl ps -a {app}`.")
        return chosen

    async def restart_dynos(self, app: str, target: str | None) -> None:
        self.ledger.get_app(app)
        if self.manager.is_sleeping(app):  # nothing runs to restart: the restart wakes it (any target)
            self.manager.wake_app(app)
            return
        chosen = self._select(app, target)
        for live in chosen:
            self.manager.emit(live, "Restarting")
            self.manager.restart(live)  # with preboot a web dyno is replaced new-before-old
        # Crashed dynos waiting out a cool-off start again at once, as on Heroku.
        self.manager.restart_crashed_now(app, target)

    async def stop_dyno(self, app: str, target: str) -> None:
        for live in self._select(app, target):
            self.manager.stop_soon(live, "ps:stop")

    async def _one_off(self, app: str, command: str, size: str | None, env: dict[str, str], **kwargs: Any
                       ) -> LiveDyno:
        if not command.strip():
            raise UserError("No command given: dynoctl run COMMAND [ARGS...].")
        for key in env:
            check_config_var_name(key)
        release = self._current(app)
        name = f"{ONE_OFF_TYPE}.{self.ledger.next_run_number(app)}"
        size_name = dyno_size(size).name if size else DEFAULT_SIZE
        return await self.manager.start(app, ONE_OFF_TYPE, name, release, size_name, command,
                                        extra_env=env, **kwargs)

    async def run_detached(self, app: str, command: str, size: str | None, env: dict[str, str]) -> Json:
        live = await self._one_off(app, command, size, env)
        return self._dyno_json(live.record)

    async def run_scheduled(self, app: str, command: str, size: str) -> Json:
        """A scheduler job's run: a detached one-off dyno named scheduler.N (docs/scheduler.md)."""
        from ..manager.reconcile import SCHEDULER_TYPE

        release = self._current(app)
        name = f"{SCHEDULER_TYPE}.{self.ledger.next_run_number(app)}"
        live = await self.manager.start(app, SCHEDULER_TYPE, name, release, dyno_size(size).name, command)
        return self._dyno_json(live.record)

    async def run_attached(self, app: str, command: str, size: str | None, env: dict[str, str], tty: bool,
                           rows: int, cols: int) -> AttachedDyno:
        from ..manager.attach import AttachedSession

        live = await self._one_off(app, command, size, env, stdio="tty" if tty else "pipes", rows=rows,
                                   cols=cols, attached=True)
        return AttachedSession(live, self.manager, self.logs)

    async def exec_attached(self, app: str, dyno: str, command: str, tty: bool, rows: int, cols: int,
                            term: str | None = None) -> AttachedDyno:
        """ps:exec: ``command`` inside the running dyno ``dyno`` (docs/dynos.md, "Exec into a running dyno")."""
        from ..manager.exec import start_exec

        self.ledger.get_app(app)
        return await start_exec(self.manager, app, dyno, command, tty=tty, rows=rows, cols=cols, term=term)

    # -- app features (preboot) -----------------------------------------------------------------
    async def list_features(self, app: str) -> list[Json]:
        from ..manager.features import CATALOGUE, feature_json

        enabled = self.ledger.list_features(app)
        return [feature_json(f, f.name in enabled) for f in CATALOGUE.values()]

    async def get_feature(self, app: str, name: str) -> Json:
        from ..manager.features import feature, feature_json

        found = feature(name)
        return feature_json(found, found.name in self.ledger.list_features(app))

    async def set_feature(self, app: str, name: str, enabled: bool) -> Json:
        from ..manager.features import feature, feature_json

        found = feature(name)
        self.ledger.set_feature(app, found.name, enabled)
        self.logs.emit(app, "dynod", "api", f"Feature {found.name} {'enabled' if enabled else 'disabled'}")
        self.manager.wake()
        return feature_json(found, enabled)

    # -- the web health check (dynod.manager.health) ----------------------------------------------
    async def get_health_check(self, app: str) -> Json:
        self.ledger.get_app(app)
        check = self.manager.health_checks.get(app)
        return {"enabled": check is not None, **(check.to_json() if check is not None else {})}

    async def set_health_check(self, app: str, body: Json) -> Json:
        from ..manager.health import HealthCheck

        self.ledger.get_app(app)
        check = HealthCheck.from_json(body)
        self.manager.health_checks.set(app, check)
        self.logs.emit(app, "dynod", "api", f"Health check set: GET {check.path} must answer {check.status} "
                                            f"within {check.timeout:g} s, every {check.interval:g} s")
        return {"enabled": True, **check.to_json()}

    async def remove_health_check(self, app: str) -> None:
        self.ledger.get_app(app)
        self.manager.health_checks.remove(app)
        self.logs.emit(app, "dynod", "api", "Health check removed")

    # -- builds and keys ---------------------------------------------------------------------
    async def build_source(self, app: str, archive: Any, *, source: str, source_version: str | None,
                           user: str | None, output: Callable[[str], None]) -> Json:
        return await self.deploys.build(app, archive, source=source, source_version=source_version, user=user,
                                        output=output)

    async def list_builds(self, app: str) -> list[Json]:
        return self.deploys.list_builds(app)

    async def build_output(self, app: str, build_id: str | None) -> str:
        return self.deploys.build_output(app, build_id)

    async def list_keys(self) -> list[Json]:
        return [key.to_json() for key in self.deploys.keys.list()]

    async def add_key(self, public_key: str) -> Json:
        return self.deploys.keys.add(public_key).to_json()

    async def remove_key(self, which: str) -> None:
        self.deploys.keys.remove(which)

    # -- logs --------------------------------------------------------------------------------
    async def log_lines(self, app: str, lines: int, ps: str | None, source: str | None) -> list[str]:
        self.ledger.get_app(app)
        return self.logs.recent(app, lines, ps=ps, source=source)

    def tail_logs(self, app: str, lines: int, ps: str | None, source: str | None) -> AsyncIterator[list[str]]:
        self.ledger.get_app(app)
        return self.logs.tail_batches(app, lines, ps=ps, source=source)

    async def list_drains(self, app: str) -> list[Json]:
        self.ledger.get_app(app)
        return self.logs.list_drains(app)

    async def add_drain(self, app: str, url: str) -> Json:
        self.ledger.get_app(app)
        await self.logs.check_drain_target(url)  # not the host, not its dynos (logplex/egress.py)
        return self.logs.add_drain(app, url)

    async def remove_drain(self, app: str, url_or_id: str) -> None:
        self.ledger.get_app(app)
        self.logs.remove_drain(app, url_or_id)

    # -- routing -----------------------------------------------------------------------------
    def _default_domain(self, app: str) -> str:
        return f"{app}.{self.settings.router.base_domain}"

    async def list_domains(self, app: str) -> list[Json]:
        self.ledger.get_app(app)
        custom = self.ledger.list_domains(app)
        return [{"hostname": self._default_domain(app), "kind": "heroku"}] + [
            {"hostname": d, "kind": "custom"} for d in custom]

    async def add_domain(self, app: str, hostname: str) -> Json:
        hostname = hostname.strip().lower().rstrip(".")
        if hostname.endswith("." + self.settings.router.base_domain) or hostname == self.settings.router.base_domain:
            raise UserError(f"{hostname} is under the platform's base domain; add a domain you own.")
        self.ledger.add_domain(app, hostname)
        self.routes_changed()
        self._acm_wake()  # with ACM on, the new domain gets its certificate without another command
        return {"hostname": hostname, "kind": "custom"}

    async def remove_domain(self, app: str, hostname: str) -> None:
        hostname = hostname.strip().lower().rstrip(".")
        self.ledger.remove_domain(app, hostname)
        self.routes_changed()
        if self.acm is not None:
            self.acm.domain_removed(app, hostname)  # no longer renewed; its ACM certificate is revoked

    async def list_certs(self, app: str) -> list[Json]:
        self.ledger.get_app(app)
        from cryptography import x509

        return [_describe_cert(domain, x509.load_pem_x509_certificate(pem.encode()))
                for domain, pem, _key in self.ledger.list_certs(app)]

    async def add_cert(self, app: str, domain: str, cert_pem: str, key_pem: str) -> Json:
        from ..router.tls import check_cert_pair

        domain = domain.strip().lower()
        if domain not in {d["hostname"] for d in await self.list_domains(app)}:
            raise UserError(f"{domain} is not a domain of {app}: add it first with dynoctl domains:add.")
        cert = check_cert_pair(domain, cert_pem, key_pem)
        self.ledger.add_cert(app, domain, cert_pem, key_pem)
        self.routes_changed()
        return _describe_cert(domain, cert)

    def route_table(self) -> RoutesSnapshot:
        """The router's view: every app, its hostnames, and its web dynos that are up.

        Built typed: each value comes checked from where it is kept (domains and policy by the
        ledger's setters, addresses by the pool, challenge tokens by the ACME client), and the
        router checks the whole snapshot again when it arrives (it keeps its routes if refused).
        """
        apps = []
        for app in self.ledger.list_apps():
            web = self.manager.web_routes(app.name)  # booting while replacements are made: never H14
            challenges = self.acm.challenges(app.name) if self.acm is not None else {}
            apps.append(AppRoute(
                name=app.name,
                domains=tuple(normalize_domain(d) for d in
                              (self._default_domain(app.name), *self.ledger.list_domains(app.name))),
                maintenance=app.maintenance,
                policy=app.routing_policy,
                booting=web.booting,
                crashed=web.crashed,
                # An up dyno always has its address; one without could not be routed to anyway.
                dynos=tuple(DynoRoute(d.name, d.ip, d.port) for d in web.dynos if d.ip is not None),
                challenges={token.encode(): answer.encode() for token, answer in challenges.items()},
                sleeping=self.manager.is_sleeping(app.name),  # the router holds and asks to wake it
            ))
        return RoutesSnapshot(tuple(apps))

    # -- automated certificate management (dynod.acm) --------------------------------------------
    def _acm_wake(self) -> None:
        if self.acm is not None:
            self.acm.wake()

    def _acm(self, app: str) -> Any:
        self.ledger.get_app(app)
        if self.acm is None:
            raise UserError("Automatic Certificate Management is off on this host: it needs the router "
                            "([router] enabled = true).")
        return self.acm

    async def acm_status(self, app: str) -> Json:
        return self._acm(app).status(app)

    async def acm_enable(self, app: str) -> Json:
        return self._acm(app).enable(app)

    async def acm_disable(self, app: str) -> Json:
        return self._acm(app).disable(app)

    async def acm_refresh(self, app: str) -> Json:
        return self._acm(app).refresh(app)

    def certificates(self) -> list[Json]:
        return [{"domain": domain, "cert_pem": cert, "key_pem": key}
                for app in self.ledger.list_apps() for domain, cert, key in self.ledger.list_certs(app.name)]

    # -- stacks and the daemon ---------------------------------------------------------------
    async def list_stacks(self) -> list[Json]:
        return await trio.to_thread.run_sync(self.stacks.list)

    async def build_stack(self, name: str | None, progress: Callable[[str], None]) -> Json:
        token = trio.lowlevel.current_trio_token()

        def report(line: str) -> None:
            trio.from_thread.run_sync(progress, line, trio_token=token)

        await trio.to_thread.run_sync(lambda: self.stacks.build(name or self.settings.stack, report, force=True))
        self.manager.forget_stack()
        for stack in await self.list_stacks():
            if stack["name"] == (name or self.settings.stack):
                return stack
        raise NotFound(f"Unknown stack {name!r}.")

    async def status(self) -> Json:
        return {"version": __version__, "pid": os.getpid(), "apps": len(self.ledger.list_apps()),
                "uptime": round(time.time() - self._started_at, 1), "cgroups": self.manager.cgroups.kind,
                "cgroup_roots": self.manager.cgroups.roots(), **self.manager.statistics()}

    async def shutdown(self, stop_dynos: bool) -> None:
        self._request_shutdown(stop_dynos)


def _describe_cert(domain: str, cert: Any) -> Json:
    return {"domain": domain, "not_after": cert.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
            "self_signed": cert.issuer == cert.subject, "issuer": cert.issuer.rfc4514_string()}


def _index(name: str) -> int:
    try:
        return int(name.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return 0
