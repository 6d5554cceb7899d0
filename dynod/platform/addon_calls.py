"""The Platform API's add-on calls (dynod.addons; docs/addons.md), mixed into ``Platform``.

A block of its own: each call checks that add-ons run in this dynod and hands over to
``dynod.addons.Addons``; the rules of add-ons live there, not here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..api.service import Json
from ..errors import UserError
from ..ledger import Ledger
from ..manager.dynos import DynoManager
from ..model import Release


class AddonCalls:
    """The API's add-on calls, mixed into Platform (a block of its own, apart from the rest)."""

    addons: Any
    ledger: Ledger
    logs: Any
    manager: DynoManager

    def addon_released(self, release: Release) -> None:
        self.logs.emit(release.app, "dynod", "api", f"Release v{release.version} created by dynoctl: "
                                                     f"{release.description}")
        self.manager.reset_crashes(release.app)
        self.manager.wake_app(release.app)  # a new release starts a sleeping app's dynos again
        self.manager.wake()

    def _addons(self) -> Any:
        if self.addons is None:
            raise UserError("Add-ons are not available in this dynod.", status=503, code="unavailable")
        return self.addons

    async def list_addons(self, app: str | None) -> list[Json]:
        if app is not None:
            self.ledger.get_app(app)
        return self._addons().list_json(app)  # type: ignore[no-any-return]

    async def create_addon(self, app: str, plan: str, attachment: str | None, name: str | None) -> Json:
        return await self._addons().create(app, plan, attachment=attachment, name=name)  # type: ignore[no-any-return]

    async def get_addon(self, name: str, app: str | None) -> Json:
        return await self._addons().info(name, app)  # type: ignore[no-any-return]

    async def destroy_addon(self, name: str, app: str | None, force: bool, final_backup: bool = True) -> Json:
        return await self._addons().destroy(name, app=app, force=force,  # type: ignore[no-any-return]
                                            final_backup=final_backup)

    async def change_addon_plan(self, app: str, name: str, plan: str) -> Json:
        return await self._addons().change_plan(app, name, plan)  # type: ignore[no-any-return]

    async def list_attachments(self, app: str | None) -> list[Json]:
        addons = self._addons()
        if app is not None:
            self.ledger.get_app(app)
        return [addons.attachment_json(a) for a in self.ledger.list_attachments(app=app)]

    async def attach_addon(self, addon: str, app: str, attachment: str | None) -> Json:
        return await self._addons().attach(addon, app, attachment)  # type: ignore[no-any-return]

    async def detach_addon(self, app: str, attachment: str) -> Json:
        return await self._addons().detach(app, attachment)  # type: ignore[no-any-return]

    async def list_addon_services(self) -> list[Json]:
        return self._addons().services_json()  # type: ignore[no-any-return]

    async def list_addon_plans(self, service: str) -> list[Json]:
        return self._addons().plans_json(service)  # type: ignore[no-any-return]

    # pg:* and redis:* (their API routes: /apps/{app}/pg-..., /apps/{app}/redis-...)
    async def pg_backups(self, app: str) -> list[Json]:
        return self._addons().list_backups(app)  # type: ignore[no-any-return]

    async def pg_backup_capture(self, app: str, database: str | None) -> Json:
        return await self._addons().capture(app, database)  # type: ignore[no-any-return]

    async def pg_backup_restore(self, app: str, backup: str | None, database: str | None) -> Json:
        return await self._addons().restore(app, backup, database)  # type: ignore[no-any-return]

    async def pg_backup_delete(self, app: str, backup: str) -> None:
        self._addons().delete_backup(app, backup)

    async def pg_backup_download(self, app: str, backup: str | None) -> tuple[Json, AsyncIterator[bytes]]:
        addons = self._addons()
        found = addons.backup(app, backup)
        if found.status != "completed":
            raise UserError(f"Backup {found.id} is {found.status}: there is nothing to download.")
        return found.to_json(), addons.backups.read_chunks(found)

    async def pg_backup_schedules(self, app: str) -> list[Json]:
        return self._addons().schedules(app)  # type: ignore[no-any-return]

    async def pg_backup_schedule(self, app: str, database: str | None, at: str) -> Json:
        return self._addons().schedule(app, database, at)  # type: ignore[no-any-return]

    async def pg_backup_unschedule(self, app: str, database: str | None) -> None:
        self._addons().unschedule(app, database)

    async def pg_rotate(self, app: str, database: str | None) -> Json:
        return await self._addons().rotate(app, database)  # type: ignore[no-any-return]

    async def pg_reset(self, app: str, database: str | None) -> Json:
        return await self._addons().reset(app, database)  # type: ignore[no-any-return]

    async def pg_ps(self, app: str, database: str | None) -> list[Json]:
        return await self._addons().pg_ps(app, database)  # type: ignore[no-any-return]

    async def pg_kill(self, app: str, database: str | None, pid: int, force: bool) -> Json:
        return await self._addons().pg_kill(app, database, pid, force)  # type: ignore[no-any-return]

    async def redis_command(self, app: str, name: str | None, argv: list[str]) -> Json:
        return await self._addons().redis_command(app, name, argv)  # type: ignore[no-any-return]
