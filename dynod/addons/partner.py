"""Add-on services that speak Heroku's Add-on Partner API: existing add-ons attach to dynod apps.

A partner service is declared in dynod.toml (``[[addons.partners]]``: its name, its base URL,
the manifest's id and password, its plans and its config var prefix). dynod then does what
Heroku does for it, over HTTPS with basic auth:

- provision: ``POST {base_url}/heroku/resources`` with the add-on's uuid, name and plan; the
  answer's ``id`` and ``config`` (``{"MYADDON_URL": ...}``) are kept, the config vars without the
  service's prefix, so that each attachment prefixes them itself (``--as CACHE``: CACHE_URL);
- plan change: ``PUT {base_url}/heroku/resources/{id}`` with the new plan; new config, if any;
- deprovision: ``DELETE {base_url}/heroku/resources/{id}``.

Asynchronous provisioning (a 202 that completes later through Heroku's Platform API) is not
supported: such an answer is one clear error, and the add-on is not recorded.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import UserError
from ..model import Addon
from .plans import Plan, Service
from .provider import Provisioned

TIMEOUT = 30.0  # Heroku gives a partner 30 s to answer a provision
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
_PREFIX_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")


@dataclass(frozen=True)
class PartnerService:
    service: Service
    base_url: str
    username: str  # the manifest's id
    password: str
    ca_file: str | None  # a private CA for the partner's certificate (tests, internal services)


def partner_services(entries: Any) -> list[PartnerService]:
    """``[[addons.partners]]`` tables -> services; a bad entry is one line naming what to fix."""
    if not isinstance(entries, list):
        raise UserError("[addons] partners must be a list of tables ([[addons.partners]]).")
    found = []
    for i, entry in enumerate(entries):
        where = f"[[addons.partners]] #{i + 1}"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be a table.")
        known = {"name", "human_name", "base_url", "username", "password", "plans", "config_vars_prefix",
                 "ca_file"}
        unknown = set(entry) - known
        if unknown:
            raise UserError(f"{where}: unknown setting {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}.")
        name, url, plans = entry.get("name"), entry.get("base_url"), entry.get("plans")
        prefix = entry.get("config_vars_prefix") or (name.upper().replace("-", "_") if isinstance(name, str) else "")
        if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith("heroku-"):
            raise UserError(f"{where}: name must be lowercase letters, digits and '-' (not heroku-...).")
        if not isinstance(url, str) or urlsplit(url).scheme != "https" or not urlsplit(url).hostname:
            raise UserError(f"{where} ({name}): base_url must be an https:// URL (the Partner API is HTTPS only).")
        if not isinstance(plans, list) or not plans or not all(isinstance(p, str) and _NAME_RE.match(p) for p in plans):
            raise UserError(f"{where} ({name}): plans must be a list of plan names like [\"test\", \"basic\"].")
        if not _PREFIX_RE.match(prefix):
            raise UserError(f"{where} ({name}): config_vars_prefix must be like MYADDON.")
        for key in ("username", "password"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise UserError(f"{where} ({name}): {key} (the manifest's id and password) is required.")
        service = Service(name=name, human_name=str(entry.get("human_name") or name), addon_prefix=name,
                          attachment=prefix, color_prefix=prefix, default_plan=plans[0],
                          plans=tuple(Plan(name, p, memory_mb=0, connections=0) for p in plans))
        found.append(PartnerService(service, url.rstrip("/"), entry["username"], entry["password"],
                                    entry.get("ca_file")))
    return found


class PartnerProvider:
    """A ``Provider`` for one partner service."""

    def __init__(self, partner: PartnerService) -> None:
        self.partner = partner
        self.service = partner.service

    def _client(self) -> Any:
        import httpx

        context = ssl.create_default_context(cafile=self.partner.ca_file)
        return httpx.AsyncClient(base_url=self.partner.base_url, auth=(self.partner.username, self.partner.password),
                                 verify=context, timeout=TIMEOUT, follow_redirects=False,
                                 headers={"Accept": "application/vnd.heroku-addons+json; version=3"})

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        import httpx

        try:
            async with self._client() as client:
                response = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise UserError(f"{self.service.name} did not answer ({type(exc).__name__}: {exc}); try again later.",
                            status=502, code="partner_unavailable") from None
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {}
        if response.status_code >= 400:
            message = data.get("message") if isinstance(data, dict) else None
            raise UserError(f"{self.service.name} refused: {message or f'HTTP {response.status_code}'}.",
                            status=422 if response.status_code < 500 else 502, code="partner_refused")
        return response.status_code, data if isinstance(data, dict) else {}

    def _config(self, data: dict[str, Any]) -> dict[str, str]:
        config = data.get("config") or {}
        if not isinstance(config, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in config.items()):
            raise UserError(f"{self.service.name} answered config that is not a map of strings.", status=502,
                            code="partner_refused")
        prefix = self.service.attachment + "_"
        out = {}
        for key, value in config.items():
            # Heroku replaces the service's prefix by the attachment's name: MYADDON_URL -> CACHE_URL.
            out[key[len(prefix):] if key.startswith(prefix) and len(key) > len(prefix) else key] = value
        return out

    async def provision(self, *, addon_id: str, name: str, app: str, plan: Plan) -> Provisioned:
        status, data = await self._call("POST", "/heroku/resources", {
            "uuid": addon_id, "name": name, "heroku_id": f"app{app}@dynod", "plan": plan.name, "region": "local",
            "callback_url": "", "options": {}})
        if status == 202:
            # It is provisioning asynchronously; nothing here would ever learn the result.
            await self._call("DELETE", f"/heroku/resources/{data.get('id') or addon_id}")
            raise UserError(f"{self.service.name} provisions asynchronously (202), which dynod does not support; "
                            "nothing was created.", status=422, code="partner_refused")
        resource_id = data.get("id")
        if not isinstance(resource_id, (str, int)) or not str(resource_id):
            raise UserError(f"{self.service.name} answered without a resource id.", status=502, code="partner_refused")
        return Provisioned(config=self._config(data), provider_data={"id": str(resource_id),
                                                                     "message": str(data.get("message", ""))})

    async def change_plan(self, addon: Addon, plan: Plan) -> dict[str, str] | None:
        _status, data = await self._call("PUT", f"/heroku/resources/{addon.provider_data['id']}",
                                         {"plan": plan.name, "uuid": addon.id, "heroku_id": f"app{addon.app}@dynod"})
        return self._config(data) if data.get("config") else None

    async def start(self, addon: Addon) -> None:
        """Nothing runs here: the partner keeps its resource."""

    async def deprovision(self, addon: Addon) -> None:
        await self._call("DELETE", f"/heroku/resources/{addon.provider_data['id']}")

    async def info(self, addon: Addon) -> list[tuple[str, str]]:
        return [("Plan", addon.plan), ("Provider", self.partner.base_url),
                ("Resource id", str(addon.provider_data.get("id", ""))), ("Add-on", addon.name)]
