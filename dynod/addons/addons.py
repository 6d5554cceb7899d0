"""``Addons``: what the platform calls to create, attach, detach, destroy and back up add-ons.

It asks a provider (``provider.Provider``: the built-in PostgreSQL and Redis, each add-on its own
supervised server) to make or remove the resource and records the result in the ledger, where
each create, attach, detach and destroy is one transaction with the release it makes. It also
keeps the firewall's per-add-on sets: only the dynos of the apps an add-on is attached to may
reach its port.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..errors import Conflict, NotFound, UserError
from ..model import Addon, AddonAttachment, Release
from .backups import Backup, BackupStore, fsync_file, next_id, next_run, parse_schedule
from .partner import PartnerProvider, partner_services
from .plans import Service, addon_name, default_attachment, parse_spec
from .postgresql import PostgresOperations, PostgresProvider
from .provider import Provider
from .redis import RedisProvider
from .servers import ServerSupervisor

__all__ = ["Addons"]
log = logging.getLogger("dynod.addons")
Json = dict[str, Any]


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Addons:
    def __init__(self, settings: Any, *, ledger: Any, logs: Any, manager: Any, firewall: Any, cgroups: Any,
                 released: Callable[[Release], None]) -> None:
        self.settings = settings
        self.ledger = ledger
        self.logs = logs
        self.manager = manager
        self.firewall = firewall
        self.root: Path = settings.state_dir / "addons"
        self._released = released  # the platform's: log the release, wake the manager
        self.supervisor = ServerSupervisor(cgroups, emit=self._emit)
        gateway = lambda: manager.network.pool.gateway  # noqa: E731 - the dyno bridge's address
        self.providers: dict[str, Provider] = {
            "heroku-postgresql": PostgresProvider(root=self.root, supervisor=self.supervisor, host=gateway,
                                                  subnet=settings.network.subnet, ports=self._allocate_port),
            "heroku-redis": RedisProvider(root=self.root, supervisor=self.supervisor, host=gateway,
                                          ports=self._allocate_port),
        }
        for partner in partner_services(settings.addons.partners):
            self.providers[partner.service.name] = PartnerProvider(partner)
        self.pg = PostgresOperations(self.providers["heroku-postgresql"])  # type: ignore[arg-type]
        self.backups = BackupStore(settings.state_dir / "backups")
        self._schedules_file = self.backups.root / "schedules.json"
        self._backup_locks: dict[str, trio.Lock] = {}
        self._schedules_changed = trio.Event()
        self._lock = trio.Lock()  # one create/destroy at a time: ports and names are chosen under it
        self._ports_taken: set[int] = set()  # chosen, not yet in the ledger
        self._rng = random.SystemRandom()

    def _emit(self, app: str, line: str) -> None:
        self.logs.emit(app, "dynod", "addons", line)

    # -- life cycle ------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start (or adopt) every add-on's server, let the dynos of attached apps through, then
        keep the servers supervised until cancelled."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.supervisor.run)
            addons = self.ledger.list_addons()
            self._sweep_orphans({a.name for a in addons})
            async with trio.open_nursery() as starts:
                for addon in addons:
                    starts.start_soon(self._start_one, addon)
            await self.refresh_access()
            nursery.start_soon(self._run_schedules)
            task_status.started()

    async def _start_one(self, addon: Addon) -> None:
        try:
            await self._provider(addon.service).start(addon)
        except (UserError, OSError, trio.TooSlowError) as exc:
            log.error("add-on %s not started: %s", addon.name, exc)
            self._emit(addon.app, f"Error: add-on {addon.name} did not start: {exc}")

    def _sweep_orphans(self, known: set[str]) -> None:
        # A dynod killed mid-provisioning leaves a home the ledger never recorded; one killed
        # mid-destroy, a server whose add-on the ledger has forgotten. Both go: the server (its
        # whole cgroup) first, then its home.
        cgroups = self.supervisor.cgroups
        for name in cgroups.names():
            if name not in known:
                group = cgroups.open(name, 0)
                if group is not None:
                    log.warning("stopping add-on server %s: no add-on of that name in the ledger", name)
                    group.kill_all()
                    try:
                        group.remove()
                    except OSError as exc:
                        log.warning("cgroup of %s not removed: %s", name, exc)
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name not in known:
                log.warning("removing %s: no add-on of that name in the ledger", entry)
                shutil.rmtree(entry, ignore_errors=True)

    async def stop_servers(self) -> None:
        await self.supervisor.stop_all()

    # -- access: only attached apps' dynos reach an add-on's port ------------------------------
    def _port(self, addon: Addon) -> Any:
        from ..linux.firewall import HostPort

        return HostPort("tcp", int(addon.provider_data["port"]), only=True)  # type: ignore[call-overload]

    def _desired(self, extra: tuple[str, str] | None = None, gone: str | None = None) -> dict[Any, set[str]]:
        addresses: dict[str, set[str]] = {}
        for live in list(self.manager.live.values()):
            ip = live.record.ip
            if ip and ip != gone:
                addresses.setdefault(live.record.app, set()).add(ip)
        if extra is not None:
            addresses.setdefault(extra[0], set()).add(extra[1])
        desired: dict[Any, set[str]] = {}
        for addon in self.ledger.list_addons():
            if "port" not in addon.provider_data:
                continue  # a partner's add-on: not on this host
            apps = {a.app for a in self.ledger.list_attachments(addon=addon.name)}
            desired[self._port(addon)] = set().union(*(addresses.get(app, set()) for app in apps))
        return desired

    async def refresh_access(self, *, extra: tuple[str, str] | None = None, gone: str | None = None) -> None:
        desired = self._desired(extra, gone)
        await trio.to_thread.run_sync(self.firewall.admit_exactly, desired)

    async def address_claimed(self, app: str, address: str) -> None:
        """The dyno manager's hook, before a dyno may run: let it reach its app's add-ons."""
        if not self._admitted(address) and not self.ledger.list_attachments(app=app):
            return  # no add-on to reach and no stale admission to take back: most dyno starts
        await self.refresh_access(extra=(app, address))

    def address_released(self, address: str | None) -> None:
        if address and self._admitted(address):
            self.manager.start_soon(partial(self.refresh_access, gone=address))

    def _admitted(self, address: str) -> bool:
        """Whether any add-on port admits ``address`` now (the firewall's own record of its sets)."""
        return any(address in members for _name, members in self.firewall.spec.admitted)

    # -- queries ---------------------------------------------------------------------------------
    def service(self, name: str) -> Service:
        service, _ = parse_spec(name)
        if service not in self.providers:
            raise NotFound(f"Couldn't find that add-on service: {name}; the services are "
                           f"{', '.join(sorted(self.providers))} (dynoctl addons:services).")
        return self.providers[service].service

    def _provider(self, service: str) -> Provider:
        try:
            return self.providers[service]
        except KeyError:
            raise NotFound(f"Couldn't find that add-on service: {service}.") from None

    def services_json(self) -> list[Json]:
        return [{"id": s.name, "name": s.name, "human_name": s.human_name, "state": "ga"}
                for s in (p.service for p in self.providers.values())]

    def plans_json(self, service_name: str) -> list[Json]:
        service = self.service(service_name)
        return [{"id": p.id, "name": p.id, "human_name": p.name, "default": p.name == service.default_plan,
                 "price": {"cents": 0, "unit": "month"}, "addon_service": {"id": service.name, "name": service.name},
                 "limits": {"memory_mb": p.memory_mb, "connections": p.connections, "storage_mb": p.storage_mb,
                            "maxmemory_policy": p.maxmemory_policy if service.name == "heroku-redis" else None}}
                for p in service.plans]

    def addon_json(self, addon: Addon, attachments: list[AddonAttachment] | None = None) -> Json:
        attachments = attachments if attachments is not None else self.ledger.list_attachments(addon=addon.name)
        return {
            "id": addon.id, "name": addon.name, "state": "provisioned",
            "addon_service": {"id": addon.service, "name": addon.service},
            "plan": {"id": f"{addon.service}:{addon.plan}", "name": f"{addon.service}:{addon.plan}"},
            "app": {"name": addon.app}, "created_at": _rfc3339(addon.created_at),
            "config_vars": sorted(f"{a.name}_{key}" for a in attachments if a.app == addon.app
                                  for key in addon.config),
            "attachments": [self.attachment_json(a, addon) for a in attachments],
            "web_url": None,
        }

    def attachment_json(self, attachment: AddonAttachment, addon: Addon | None = None) -> Json:
        addon = addon or self.ledger.get_addon(attachment.addon)
        return {"id": attachment.id, "name": attachment.name, "app": {"name": attachment.app},
                "addon": {"id": addon.id, "name": addon.name, "app": {"name": addon.app}},
                "config_vars": sorted(f"{attachment.name}_{key}" for key in addon.config),
                "created_at": _rfc3339(attachment.created_at)}

    def list_json(self, app: str | None) -> list[Json]:
        return [self.addon_json(a) for a in self.ledger.list_addons(app)]

    def get(self, name: str, app: str | None = None) -> Addon:
        """An add-on by name, or by attachment name on ``app`` (Heroku accepts both)."""
        try:
            return self.ledger.get_addon(name)
        except NotFound:
            if app is None:
                raise
            for attachment in self.ledger.list_attachments(app=app):
                if attachment.name == name or f"{attachment.name}_URL" == name:
                    return self.ledger.get_addon(attachment.addon)
            raise NotFound(f"Couldn't find that add-on: {name} (not an add-on name, nor an attachment of {app}).") \
                from None

    async def info(self, name: str, app: str | None = None) -> Json:
        addon = self.get(name, app)
        result = self.addon_json(addon)
        try:
            result["info"] = await self._provider(addon.service).info(addon)
        except Exception as exc:  # the server down: say so rather than fail the whole answer
            result["info"] = [("Status", f"unavailable ({type(exc).__name__}: {str(exc).strip()[:200]})")]
        return result

    # -- changes ---------------------------------------------------------------------------------
    def _allocate_port(self) -> int:
        first, count = self.settings.addons.port_first, self.settings.addons.port_count
        used = {int(a.provider_data.get("port", 0)) for a in self.ledger.list_addons()}  # type: ignore[call-overload]
        gateway = self.manager.network.pool.gateway
        for port in range(first, first + count):
            if port in used or port in self._ports_taken:
                continue
            with socket.socket() as probe:  # something else of the host's may hold it
                try:
                    probe.bind((gateway, port))
                except OSError:
                    continue
            self._ports_taken.add(port)
            return port
        raise UserError(f"No free add-on port in {first}..{first + count - 1}: raise [addons] port_count.",
                        status=503, code="unavailable")

    async def create(self, app: str, spec: str, *, attachment: str | None = None, name: str | None = None) -> Json:
        service_name, plan_name = parse_spec(spec)
        service = self.service(service_name)
        plan = service.plan(plan_name)
        self.ledger.get_app(app)
        from ..ledger.rules import check_addon_name, check_attachment_name

        if attachment is not None:
            check_attachment_name(attachment)
        if name is not None:
            check_addon_name(name)
        async with self._lock:
            taken = {a.name for a in self.ledger.list_addons()}
            if name is not None and name in taken:
                raise Conflict(f"The add-on name {name} is already taken; choose another with --name.")
            used = {a.name for a in self.ledger.list_attachments(app=app)}
            if attachment is not None and attachment in used:
                raise Conflict(f"{app} already has an attachment named {attachment}; choose another name with --as.")
            current = self.ledger.current_release(app)
            if attachment is not None and current is not None and f"{attachment}_URL" in current.config:
                raise Conflict(f"{app} already has the config var {attachment}_URL; choose another attachment name "
                               f"with --as, or unset {attachment}_URL first.")
            addon_name_ = name or addon_name(service, taken, self._rng)
            attachment = attachment or default_attachment(service, used, self._rng)
            addon_id = str(uuid.uuid4())
            provider = self._provider(service.name)
            started = time.monotonic()
            try:
                made = await provider.provision(addon_id=addon_id, name=addon_name_, app=app, plan=plan)
            finally:
                self._ports_taken.clear()
            addon = Addon(id=addon_id, name=addon_name_, app=app, service=service.name, plan=plan.name,
                          config=made.config, provider_data=made.provider_data, created_at=time.time())
            try:
                release = self.ledger.create_addon(addon, attachment=attachment, attachment_id=str(uuid.uuid4()))
            except BaseException:
                with trio.CancelScope(shield=True):
                    await provider.deprovision(addon)
                raise
            seconds = time.monotonic() - started
        self._emit(app, f"Provisioned {addon.name} ({plan.id}) in {seconds:.1f}s, attached as {attachment}")
        await self.refresh_access()
        self._released(release)
        result = self.addon_json(addon)
        result["provision_seconds"] = round(seconds, 3)
        result["release"] = {"version": release.version}
        return result

    async def attach(self, addon_name_: str, app: str, attachment: str | None) -> Json:
        addon = self.ledger.get_addon(addon_name_)
        self.ledger.get_app(app)
        service = self._provider(addon.service).service
        used = {a.name for a in self.ledger.list_attachments(app=app)}
        name = attachment or default_attachment(service, used, self._rng)
        release = self.ledger.attach_addon(addon.name, app, name, attachment_id=str(uuid.uuid4()))
        await self.refresh_access()
        self._released(release)
        [made] = [a for a in self.ledger.list_attachments(app=app) if a.name == name]
        return {**self.attachment_json(made, addon), "release": {"version": release.version}}

    async def detach(self, app: str, attachment: str) -> Json:
        names = {a.name: a for a in self.ledger.list_attachments(app=app)}
        if attachment not in names:  # Heroku also takes the add-on's name when it is attached once
            matches = [a for a in names.values() if a.addon == attachment]
            if len(matches) == 1:
                attachment = matches[0].name
        release = self.ledger.detach_addon(app, attachment)
        await self.refresh_access()
        self._released(release)
        return {"name": attachment, "release": {"version": release.version}}

    async def destroy(self, name: str, *, app: str | None = None, force: bool = False,
                      final_backup: bool = True) -> Json:
        addon = self.get(name, app)
        if app is not None and addon.app != app and not force:
            raise UserError(f"{addon.name} belongs to {addon.app}, not {app}; destroy it there (-a {addon.app}) "
                            f"or detach it from {app} with addons:detach.")
        others = {a.app for a in self.ledger.list_attachments(addon=addon.name)} - {addon.app}
        if others and not force:  # checked before the final backup, which may take a while
            raise Conflict(f"{addon.name} is still attached to {', '.join(sorted(others))}; detach it there first, "
                           "or pass --force to detach it everywhere.")
        final = None
        if final_backup and addon.service == "heroku-postgresql":
            try:
                final = await self._capture(addon, addon.app, "final")
            except UserError as exc:
                raise UserError(f"The final backup of {addon.name} failed ({exc}); nothing was destroyed. Retry, "
                                "or pass --no-final-backup to destroy it without one.", status=exc.status,
                                code=exc.code) from None
        provider = self._provider(addon.service)
        async with self._lock:
            if isinstance(provider, PartnerProvider):
                await provider.deprovision(addon)  # first: a partner that refuses keeps it, and so does dynod
            releases = self.ledger.destroy_addon(addon.name, force=force)
            if not isinstance(provider, PartnerProvider):
                with trio.CancelScope(shield=True):  # recorded as gone: its server and data go too
                    await provider.deprovision(addon)
        for release in releases:
            self._released(release)
        await self.refresh_access()
        self._emit(addon.app, f"Destroyed {addon.name}")
        self._drop_schedule(addon.name)
        return {**self.addon_json(addon, []), "state": "deprovisioned",
                "final_backup": final.to_json() if final else None,
                "releases": [{"app": {"name": r.app}, "version": r.version} for r in releases]}

    async def change_plan(self, app: str, name: str, spec: str) -> Json:
        addon = self.get(name, app)
        service_name, plan_name = parse_spec(spec)
        if plan_name is None:
            service_name, plan_name = addon.service, service_name
        if service_name != addon.service:
            raise UserError(f"{addon.name} is a {addon.service} add-on: choose one of its plans "
                            f"(dynoctl addons:plans {addon.service}).")
        provider = self._provider(addon.service)
        plan = provider.service.plan(plan_name)
        if plan.name == addon.plan:
            raise UserError(f"{addon.name} is already on {plan.id}.")
        if not isinstance(provider, PartnerProvider):
            raise UserError(f"Plan changes of {addon.service} add-ons are not supported yet: create one on "
                            f"{plan.id} and move the data (pg:backups:capture, then pg:backups:restore into it).")
        config = await provider.change_plan(addon, plan)
        releases = self.ledger.update_addon(addon.name, config=config, plan=plan.name,
                                            description=f"Update {addon.name} to {plan.id}")
        for release in releases:
            self._released(release)
        return {**self.addon_json(self.ledger.get_addon(addon.name)),
                "releases": [{"app": {"name": r.app}, "version": r.version} for r in releases]}

    async def app_destroyed(self, app: str) -> None:
        """Before the app goes from the ledger: its own add-ons are destroyed (detached from any
        other app, with a release there), its attachments to others' add-ons go with it."""
        for addon in self.ledger.list_addons():
            if addon.app == app:
                # Heroku's apps:destroy takes the app's data with it: no final backup to outlive it.
                await self.destroy(addon.name, force=True, final_backup=False)
        for backup in self.backups.of_app(app):  # nothing for a new app of the same name to inherit
            self.backups.delete(backup)

    # -- pg:backups (backups.py) -------------------------------------------------------------------
    def postgres_of(self, app: str, name: str | None) -> Addon:
        """The app's Postgres add-on: by add-on or attachment name (DATABASE, DATABASE_URL), or the
        one attached as DATABASE, or its only one. Never an add-on the app has no attachment of."""
        attachments = [a for a in self.ledger.list_attachments(app=app)
                       if self.ledger.get_addon(a.addon).service == "heroku-postgresql"]
        if name is None:
            chosen = [a for a in attachments if a.name == "DATABASE"] or attachments
            if len({a.addon for a in chosen}) != 1:
                raise UserError(f"{app} has {'no' if not chosen else 'several'} Postgres add-ons"
                                f"{'' if not chosen else ': name one (' + ', '.join(a.name for a in chosen) + ')'}.")
            return self.ledger.get_addon(chosen[0].addon)  # type: ignore[no-any-return]
        for a in attachments:
            if name in (a.addon, a.name, f"{a.name}_URL"):
                return self.ledger.get_addon(a.addon)  # type: ignore[no-any-return]
        raise NotFound(f"Couldn't find that Postgres add-on on {app}: {name} (see dynoctl addons -a {app}).")

    def _backup_lock(self, addon: str) -> trio.Lock:
        return self._backup_locks.setdefault(addon, trio.Lock())

    async def _capture(self, addon: Addon, app: str, kind: str) -> Backup:
        async with self._backup_lock(addon.name):
            backup = Backup(id=next_id(kind, [b.id for b in self.backups.of_app(app)]), app=app, addon=addon.name,
                            kind=kind, created_at=time.time())
            if kind == "final":
                backup.expires_at = backup.created_at + self.settings.addons.final_backup_days * 86400
            try:
                self.backups.save(backup)
            except OSError as exc:
                raise UserError(f"Cannot record a backup in {self.backups.root}: {exc.strerror}.", status=507,
                                code="insufficient_storage") from None
            final_path = self.backups.dump_path(backup)
            tmp = final_path.with_name(f".{backup.id}.dump.tmp")
            try:
                await self.pg.dump(addon, tmp)
                await trio.to_thread.run_sync(fsync_file, tmp)
                os.replace(tmp, final_path)
                backup.size, backup.status = final_path.stat().st_size, "completed"
            except (UserError, OSError) as exc:
                backup.status = "failed"
                backup.error = str(exc) if isinstance(exc, UserError) else f"{exc.strerror or exc}"
                try:
                    tmp.unlink(missing_ok=True)
                except OSError as gone:  # the record must still say "failed"
                    log.warning("partial backup %s not removed: %s", tmp, gone)
            finally:
                backup.finished_at = time.time()
                try:
                    self.backups.save(backup)
                except OSError:
                    pass  # the record stays "running"... unless the disk has room for it: said below
            if backup.status == "failed":
                raise UserError(f"Backup {backup.id} of {addon.name} failed: {backup.error}", status=500,
                                code="backup_failed")
            return backup

    async def capture(self, app: str, database: str | None) -> Json:
        addon = self.postgres_of(app, database)
        backup = await self._capture(addon, app, "capture")
        self._emit(app, f"Backup {backup.id} of {addon.name} completed ({backup.size} bytes, verified)")
        return backup.to_json()

    def list_backups(self, app: str) -> list[Json]:
        self.ledger.get_app(app)
        return [b.to_json() for b in self.backups.of_app(app)]

    def backup(self, app: str, backup_id: str | None) -> Backup:
        self.ledger.get_app(app)
        if backup_id is None:
            done = [b for b in self.backups.of_app(app) if b.status == "completed"]
            if not done:
                raise NotFound(f"{app} has no completed backup: capture one with dynoctl pg:backups:capture.")
            return done[-1]
        return self.backups.get(app, backup_id)

    async def restore(self, app: str, backup_id: str | None, database: str | None) -> Json:
        backup = self.backup(app, backup_id)
        if backup.status != "completed":
            raise UserError(f"Backup {backup.id} is {backup.status}, not completed: choose another "
                            "(dynoctl pg:backups).")
        addon = self.postgres_of(app, database)  # only an add-on attached to this app
        async with self._backup_lock(addon.name):
            await self.pg.restore(addon, self.backups.dump_path(backup))
        self._emit(app, f"Restored backup {backup.id} into {addon.name}")
        return {"backup": backup.to_json(), "addon": {"name": addon.name}}

    def delete_backup(self, app: str, backup_id: str) -> None:
        self.backups.delete(self.backup(app, backup_id))

    # -- pg:credentials:rotate, pg:reset, pg:ps, pg:kill; redis:cli --------------------------------
    async def rotate(self, app: str, database: str | None) -> Json:
        """A new password; every attached app gets a release with the new URL (its dynos restart
        on it); sessions on the old password are ended."""
        addon = self.postgres_of(app, database)
        async with self._backup_lock(addon.name):
            data = await self.pg.rotate(addon)
            provider = self.providers["heroku-postgresql"]
            releases = self.ledger.update_addon(addon.name, config={"URL": provider.url(data)},  # type: ignore[attr-defined]
                                                provider_data=data,
                                                description=f"Rotate credentials of {addon.name}")
        for release in releases:
            self._released(release)
        self._emit(app, f"Rotated the credentials of {addon.name}")
        return {"addon": {"name": addon.name},
                "releases": [{"app": {"name": r.app}, "version": r.version} for r in releases]}

    async def reset(self, app: str, database: str | None) -> Json:
        addon = self.postgres_of(app, database)
        async with self._backup_lock(addon.name):
            await self.pg.reset(addon)
        self._emit(app, f"Reset {addon.name}: its database is empty")
        return {"addon": {"name": addon.name}}

    async def pg_ps(self, app: str, database: str | None) -> list[Json]:
        return await self.pg.ps(self.postgres_of(app, database))

    async def pg_kill(self, app: str, database: str | None, pid: int, force: bool) -> Json:
        addon = self.postgres_of(app, database)
        return {"pid": pid, "killed": await self.pg.kill(addon, pid, force)}

    def redis_of(self, app: str, name: str | None) -> Addon:
        attachments = [a for a in self.ledger.list_attachments(app=app)
                       if self.ledger.get_addon(a.addon).service == "heroku-redis"]
        for a in attachments:
            if name is None and len({b.addon for b in attachments}) == 1 or name in (a.addon, a.name, f"{a.name}_URL"):
                return self.ledger.get_addon(a.addon)  # type: ignore[no-any-return]
        if name is None and attachments:
            raise UserError(f"{app} has several Redis add-ons: name one ({', '.join(a.name for a in attachments)}).")
        raise NotFound(f"Couldn't find that Redis add-on on {app}: {name or '(none attached)'}.")

    async def redis_command(self, app: str, name: str | None, argv: list[str]) -> Json:
        addon = self.redis_of(app, name)
        provider = self.providers["heroku-redis"]

        def run() -> Any:
            import redis

            try:
                return provider.client(addon).execute_command(*argv)  # type: ignore[attr-defined]
            except redis.ResponseError as exc:
                return {"error": str(exc)}
            except redis.ConnectionError as exc:
                raise UserError(f"{addon.name} is not answering: {exc}", status=503, code="unavailable") from None

        return {"addon": addon.name, "result": _plain(await trio.to_thread.run_sync(run))}

    # -- schedules -------------------------------------------------------------------------------
    def _read_schedules(self) -> dict[str, Any]:
        try:
            return json.loads(self._schedules_file.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def _write_schedules(self, schedules: dict[str, Any]) -> None:
        self.backups.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._schedules_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(schedules, sort_keys=True))
        os.replace(tmp, self._schedules_file)
        self._schedules_changed.set()

    def _drop_schedule(self, addon: str) -> None:
        schedules = self._read_schedules()
        if schedules.pop(addon, None) is not None:
            self._write_schedules(schedules)

    def schedule(self, app: str, database: str | None, at: str) -> Json:
        hour, minute, zone = parse_schedule(at)
        addon = self.postgres_of(app, database)
        schedules = self._read_schedules()
        schedules[addon.name] = {"app": app, "hour": hour, "minute": minute, "zone": zone}
        self._write_schedules(schedules)
        return {"addon": addon.name, "at": f"{hour:02d}:{minute:02d} {zone}",
                "next_run_at": _rfc3339(next_run(hour, minute, zone, time.time())),
                "retention": self._provider(addon.service).service.plan(addon.plan).backups_kept}

    def unschedule(self, app: str, database: str | None) -> None:
        addon = self.postgres_of(app, database)
        if addon.name not in self._read_schedules():
            raise NotFound(f"{addon.name} has no backup schedule.")
        self._drop_schedule(addon.name)

    def schedules(self, app: str) -> list[Json]:
        self.ledger.get_app(app)
        return [{"addon": name, "at": f"{s['hour']:02d}:{s['minute']:02d} {s['zone']}",
                 "next_run_at": _rfc3339(next_run(s["hour"], s["minute"], s["zone"], time.time()))}
                for name, s in sorted(self._read_schedules().items()) if s["app"] == app]

    async def _run_schedules(self) -> None:
        last_check = time.time()
        while True:
            self._prune()
            now = time.time()
            due = []
            upcoming = [now + 60.0]
            for name, s in self._read_schedules().items():
                when = next_run(s["hour"], s["minute"], s["zone"], last_check - 1)
                if when <= now:
                    due.append((name, s["app"]))
                else:
                    upcoming.append(when)
            last_check = now
            for name, app in due:
                await self._scheduled_backup(name, app)
            self._schedules_changed = trio.Event()
            with trio.move_on_at(trio.current_time() + max(0.5, min(upcoming) - time.time())):
                await self._schedules_changed.wait()

    async def _scheduled_backup(self, name: str, app: str) -> None:
        try:
            addon = self.ledger.get_addon(name)
            backup = await self._capture(addon, app, "scheduled")
            self._emit(app, f"Scheduled backup {backup.id} of {name} completed ({backup.size} bytes, verified)")
        except (UserError, OSError) as exc:  # said in the log stream and in pg:backups, never silently
            log.warning("scheduled backup of %s failed: %s", name, exc)
            self._emit(app, f"Error: scheduled backup of {name} failed: {exc}")

    def _prune(self) -> None:
        now = time.time()
        by_addon: dict[str, list[Backup]] = {}
        for backup in self.backups.all():
            if backup.expires_at is not None and backup.expires_at < now:
                self.backups.delete(backup)
            elif backup.kind == "scheduled" and backup.status == "completed":
                by_addon.setdefault(backup.addon, []).append(backup)
        for name, kept in by_addon.items():
            try:
                addon = self.ledger.get_addon(name)
            except NotFound:
                continue
            limit = self._provider(addon.service).service.plan(addon.plan).backups_kept
            for old in kept[:-limit] if limit else kept:
                self.backups.delete(old)


def _plain(value: Any) -> Any:
    """A Redis reply as JSON: bytes as text, lists and maps through."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    return value
