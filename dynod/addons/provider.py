"""The provider interface: what dynod asks of any add-on service, built-in or a partner's.

A provider makes the resource (``provision``: seconds, not minutes, for the built-in ones), keeps
it available (``start``: at dynod's start and after a crash; a no-op for a remote partner), and
removes it (``deprovision``). What it returns is the add-on's config vars without their prefix
(``{"URL": ...}``: each attachment prefixes them, DATABASE_URL) and the data it needs to find the
resource again, which the ledger keeps with the add-on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..model import Addon
from .plans import Plan, Service


@dataclass(frozen=True, slots=True)
class Provisioned:
    config: dict[str, str]
    provider_data: dict[str, Any]


class Provider(Protocol):
    service: Service

    async def provision(self, *, addon_id: str, name: str, app: str, plan: Plan) -> Provisioned: ...

    async def start(self, addon: Addon) -> None: ...

    async def deprovision(self, addon: Addon) -> None: ...

    async def info(self, addon: Addon) -> list[tuple[str, str]]: ...  # pg:info / redis:info lines
