"""What the control API asks of the daemon: the one seam between HTTP and the platform.

The API layer (server, routes) turns HTTP requests into calls on a ``PlatformService`` and its
answers into JSON; the daemon implements it (``dynod.platform.Platform``). Tests of the API can
hand the server a fake. Every method raises ``dynod.errors.UserError`` (or a subclass) for bad
input, whose ``status``/``code``/message become the HTTP error answer
``{"id": code, "message": message}``.

JSON shapes (Heroku Platform API-like; times are RFC 3339 UTC strings):
- app: {"id", "name", "created_at", "web_url", "stack", "maintenance": bool,
        "released_at": str|None, "current_release": int|None}
- release: {"version": int, "description", "created_at", "status": "succeeded"|"pending"|"failed",
            "current": bool, "slug": {"id": sha256}|None, "process_types": {type: command},
            "config_var_names": [str]}
- formation: {"type", "quantity": int, "size", "command"}
- dyno: {"name": "web.1", "type", "state": "starting"|"up"|"crashed"|"down", "size", "command",
         "release": {"version": int}, "created_at", "updated_at"}
- drain: {"id", "url", "token"}      - domain: {"hostname", "kind": "heroku"|"custom"}
- stack: {"name", "hash", "built": bool, "path", "size_bytes": int|None, "default": bool}
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

Json = dict[str, Any]


class AttachedDyno(Protocol):
    """A one-off dyno wired to the caller's terminal (``dynoctl run``)."""

    name: str  # run.4821

    async def send_stdin(self, data: bytes) -> None: ...
    async def close_stdin(self) -> None: ...  # EOF on the dyno's stdin (ignored for a TTY: sends ^D)
    async def resize(self, rows: int, cols: int) -> None: ...  # TTY only
    async def receive(self) -> tuple[str, bytes] | None:
        """Next output chunk as ("stdout"|"stderr", data); None once all output has been read."""
        ...
    async def wait(self) -> int:
        """The command's exit code (128+N when killed by signal N)."""
        ...
    async def kill(self) -> None: ...  # the client went away: stop the dyno


class PlatformService(Protocol):
    # apps
    async def list_apps(self) -> list[Json]: ...
    async def create_app(self, name: str | None) -> Json: ...  # None: a generated name
    async def get_app(self, app: str) -> Json: ...
    async def destroy_app(self, app: str) -> None: ...
    async def set_maintenance(self, app: str, on: bool) -> Json: ...

    # config vars: every change makes a release
    async def get_config(self, app: str) -> dict[str, str]: ...
    async def update_config(self, app: str, changes: dict[str, str | None]) -> dict[str, str]: ...

    # slugs and releases
    async def upload_slug(self, app: str, chunks: AsyncIterator[bytes]) -> Json:
        """Store a slug (tar.gz of app/) streamed in; returns {"id", "size", "process_types"}."""
        ...
    async def list_releases(self, app: str) -> list[Json]: ...
    async def get_release(self, app: str, version: int | None) -> Json: ...  # None: current
    async def create_release(self, app: str, slug_id: str, description: str | None) -> Json: ...
    async def rollback(self, app: str, version: int | None) -> Json: ...  # None: the one before current

    # formation and dynos
    async def get_formation(self, app: str) -> list[Json]: ...
    async def update_formation(self, app: str, updates: list[Json]) -> list[Json]:
        """updates: [{"type", "quantity"?: int, "size"?: str}], applied all or none."""
        ...
    async def list_dynos(self, app: str) -> list[Json]: ...
    async def restart_dynos(self, app: str, target: str | None) -> None: ...  # dyno name, type, or all
    async def stop_dyno(self, app: str, target: str) -> None: ...  # dyno name or type
    async def run_detached(self, app: str, command: str, size: str | None, env: dict[str, str]) -> Json: ...
    async def run_attached(self, app: str, command: str, size: str | None, env: dict[str, str],
                           tty: bool, rows: int, cols: int) -> AttachedDyno: ...

    # logs
    async def log_lines(self, app: str, lines: int, ps: str | None, source: str | None) -> list[str]: ...
    def tail_logs(self, app: str, lines: int, ps: str | None, source: str | None) -> AsyncIterator[str]: ...
    async def list_drains(self, app: str) -> list[Json]: ...
    async def add_drain(self, app: str, url: str) -> Json: ...
    async def remove_drain(self, app: str, url_or_id: str) -> None: ...

    # routing
    async def list_domains(self, app: str) -> list[Json]: ...
    async def add_domain(self, app: str, hostname: str) -> Json: ...
    async def remove_domain(self, app: str, hostname: str) -> None: ...
    async def list_certs(self, app: str) -> list[Json]: ...  # {"domain", "not_after", "self_signed"}
    async def add_cert(self, app: str, domain: str, cert_pem: str, key_pem: str) -> Json: ...

    # stacks and the daemon itself
    async def list_stacks(self) -> list[Json]: ...
    async def build_stack(self, name: str | None, progress: Callable[[str], None]) -> Json: ...
    async def status(self) -> Json: ...  # {"version", "pid", "dynos": int, "apps": int, ...}
    async def shutdown(self, stop_dynos: bool) -> None: ...
