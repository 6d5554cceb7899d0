"""The ``Ledger`` interface: what the rest of dynod codes against, whatever stores it.

Rules every implementation keeps are in the package's docstring (dynod/ledger/__init__.py).
"""


from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from ..errors import UserError
from ..model import Addon, AddonAttachment, App, DynoRecord, DynoState, Formation, Release


class Ledger(Protocol):
    # apps
    def create_app(self, name: str) -> App: ...
    def get_app(self, name: str) -> App: ...
    def list_apps(self) -> list[App]: ...
    def destroy_app(self, name: str) -> None: ...
    def set_maintenance(self, name: str, on: bool) -> App: ...
    def set_routing_policy(self, name: str, policy: str) -> App: ...  # "random" | "p2c"

    # releases (config vars live in releases: the current config is the newest release's)
    def create_release(
        self,
        app: str,
        *,
        slug_id: str | None,
        config: dict[str, str],
        process_types: dict[str, str],
        description: str,
        status: str = "succeeded",
    ) -> Release: ...
    def get_release(self, app: str, version: int) -> Release: ...
    def list_releases(self, app: str) -> list[Release]: ...  # oldest first
    def current_release(self, app: str) -> Release | None: ...  # newest "succeeded" one
    def set_release_status(self, app: str, version: int, status: str) -> Release: ...

    # formation
    def get_formation(self, app: str) -> list[Formation]: ...
    def set_formation(self, app: str, type: str, *, quantity: int | None = None, size: str | None = None
                      ) -> Formation: ...

    # dynos: what runs now, so a restarted dynod can re-adopt it
    def put_dyno(self, dyno: DynoRecord) -> None: ...  # insert or replace by id
    def set_dyno_state(self, dyno_id: str, state: DynoState, *, pid: int | None = None,
                       exit_status: int | None = None) -> None: ...
    def list_dynos(self, app: str | None = None, *, state: DynoState | None = None) -> list[DynoRecord]: ...
    def delete_dyno(self, dyno_id: str) -> None: ...
    def next_run_number(self, app: str) -> int: ...  # for one-off dynos: run.N

    # custom domains and their certificates (the router's part of the state)
    def list_domains(self, app: str) -> list[str]: ...
    def add_domain(self, app: str, hostname: str) -> None: ...  # Conflict if any app has it
    def remove_domain(self, app: str, hostname: str) -> None: ...  # drops its certificate too
    def list_certs(self, app: str) -> list[tuple[str, str, str]]: ...  # (domain, cert PEM, key PEM)
    def add_cert(self, app: str, domain: str, cert_pem: str, key_pem: str) -> None: ...

    # the app's own uid: its dynos run as uid=gid=N. The first call assigns the lowest number in
    # [first, first+count) no other app holds; destroying the app releases it. A full range is
    # a UserError ("no free uid in [...]: raise [dynos] uid_count").
    def app_uid(self, app: str, first: int, count: int) -> int: ...

    # Heroku's app features ("preboot", ...): only enabled names are stored; gone with the app.
    def list_features(self, app: str) -> set[str]: ...
    def set_feature(self, app: str, name: str, enabled: bool) -> None: ...

    # the app's buildpacks in build order ([] = detect), replaced whole; not a release (Heroku's
    # buildpack installations take effect on the next build); gone with the app.
    def get_buildpacks(self, app: str) -> list[str]: ...
    def set_buildpacks(self, app: str, urls: list[str]) -> None: ...

    # add-ons (docs/addons.md): each change of an app's attachments is one transaction with the
    # release it makes (its config vars set or removed); every release records the app's add-on set.
    def create_addon(self, addon: Addon, *, attachment: str, attachment_id: str) -> Release: ...
    def get_addon(self, name: str) -> Addon: ...
    def list_addons(self, app: str | None = None) -> list[Addon]: ...  # all, or those attached to app
    def list_attachments(self, *, app: str | None = None, addon: str | None = None) -> list[AddonAttachment]: ...
    def attach_addon(self, addon: str, app: str, name: str, *, attachment_id: str) -> Release: ...
    def detach_addon(self, app: str, attachment: str) -> Release: ...
    def destroy_addon(self, name: str, *, force: bool = False) -> list[Release]: ...  # detached everywhere
    def update_addon(self, name: str, *, config: dict[str, str] | None = None,
                     provider_data: dict[str, object] | None = None, plan: str | None = None,
                     description: str | None = None) -> list[Release]: ...

    def close(self) -> None: ...


class LedgerMissing(UserError):
    """The ledger has no schema (missing, 0 bytes, an empty database) and may not be created."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=500, code="internal")


def redacted(url: str) -> str:
    """The URL without its password (in the authority or a ``password=`` parameter), for
    messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join("password=***" if item.lower().startswith("password=") else item
                     for item in parts.query.split("&")) if parts.query else parts.query
    return urlunsplit(parts._replace(netloc=netloc, query=query))
