"""Add-ons: Heroku's databases and stores attached to apps through config vars (docs/addons.md).

``Addons`` is what the platform calls. It asks a provider (``provider.Provider``: the built-in
PostgreSQL and Redis, each add-on its own supervised server) to make or remove the resource and
records the result in the ledger, where each create, attach, detach and destroy is one
transaction with the release it makes. It also keeps the firewall's per-add-on sets: only the
dynos of the apps an add-on is attached to may reach its port.
"""

from __future__ import annotations

import logging
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
from .plans import Service, addon_name, default_attachment, parse_spec
from .postgresql import PostgresProvider
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
            task_status.started()

    async def _start_one(self, addon: Addon) -> None:
        try:
            await self._provider(addon.service).start(addon)
        except (UserError, OSError, trio.TooSlowError) as exc:
            log.error("add-on %s not started: %s", addon.name, exc)
            self._emit(addon.app, f"Error: add-on {addon.name} did not start: {exc}")

    def _sweep_orphans(self, known: set[str]) -> None:
        # A dynod killed mid-provisioning leaves a home the ledger never recorded.
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
            apps = {a.app for a in self.ledger.list_attachments(addon=addon.name)}
            desired[self._port(addon)] = set().union(*(addresses.get(app, set()) for app in apps))
        return desired

    async def refresh_access(self, *, extra: tuple[str, str] | None = None, gone: str | None = None) -> None:
        desired = self._desired(extra, gone)
        await trio.to_thread.run_sync(self.firewall.admit_exactly, desired)

    async def address_claimed(self, app: str, address: str) -> None:
        """The dyno manager's hook, before a dyno may run: let it reach its app's add-ons."""
        await self.refresh_access(extra=(app, address))

    def address_released(self, address: str | None) -> None:
        if address:
            self.manager.nursery.start_soon(partial(self.refresh_access, gone=address))

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

    async def destroy(self, name: str, *, app: str | None = None, force: bool = False) -> Json:
        addon = self.get(name, app)
        if app is not None and addon.app != app and not force:
            raise UserError(f"{addon.name} belongs to {addon.app}, not {app}; destroy it there (-a {addon.app}) "
                            f"or detach it from {app} with addons:detach.")
        async with self._lock:
            releases = self.ledger.destroy_addon(addon.name, force=force)
            with trio.CancelScope(shield=True):  # recorded as gone: its server and data go too
                await self._provider(addon.service).deprovision(addon)
        for release in releases:
            self._released(release)
        await self.refresh_access()
        self._emit(addon.app, f"Destroyed {addon.name}")
        return {**self.addon_json(addon, []), "state": "deprovisioned",
                "releases": [{"app": {"name": r.app}, "version": r.version} for r in releases]}

    async def app_destroyed(self, app: str) -> None:
        """Before the app goes from the ledger: its own add-ons are destroyed (detached from any
        other app, with a release there), its attachments to others' add-ons go with it."""
        for addon in self.ledger.list_addons():
            if addon.app == app:
                await self.destroy(addon.name, force=True)
