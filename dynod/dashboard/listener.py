"""The dashboard's TCP listener: the API's own connections, for a browser, on loopback only.

The API's access rule is the unix socket's permissions (root, or the dynod group). A browser
cannot open a unix socket, so ``[dashboard] listen`` may add a TCP listener; it is off by default
and must be a loopback address (anything else would publish the control plane). Over TCP every
API request must carry ``Authorization: Bearer <token>``, the token in
``state_dir/dashboard.token`` (0600, made at first start), which whoever may use the socket can
read with ``dynoctl dashboard``. A bearer header is never sent by a browser on its own, so another
site's page cannot make requests with it (no CSRF); the Host header must name the listener (no
DNS rebinding). The static files carry no data and need no token.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from ..api.routes import ApiRoutes, JsonResponse, Request, Response
from ..errors import UserError

TOKEN_FILE = "dashboard.token"


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:5080' or '[::1]:5080' -> (host, port); a UserError for anything not loopback."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
        address = ipaddress.ip_address(host)
    except ValueError:
        raise UserError(f"[dashboard] listen {text!r} is not HOST:PORT with an IP address: use e.g. "
                        "127.0.0.1:5080.") from None
    if not sep or not 1 <= port <= 65535:
        raise UserError(f"[dashboard] listen {text!r} needs a port from 1 to 65535: use e.g. 127.0.0.1:5080.")
    if not address.is_loopback:
        raise UserError(f"[dashboard] listen {text!r} is not a loopback address: the dashboard is served on "
                        "127.0.0.1 or ::1 only (reach it from elsewhere through an SSH tunnel).")
    return str(address), port


def load_token(state_dir: Path) -> str:
    """The dashboard's login token, made (0600) the first time."""
    path = Path(state_dir) / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(temporary, path)
    return token


def _unauthorized(message: str) -> JsonResponse:
    return JsonResponse(401, {"id": "unauthorized", "message": message})


class DashboardRoutes(ApiRoutes):
    """ApiRoutes behind the token and the Host check."""

    def __init__(self, routes: ApiRoutes, token: str, host: str, port: int) -> None:
        super().__init__(routes.platform)
        self._token = token.encode()
        shown = f"[{host}]" if ":" in host else host
        self._hosts = {f"{shown}:{port}", f"localhost:{port}"}

    async def dispatch(self, request: Request) -> Response:
        if request.headers.get("host", "").lower() not in self._hosts:
            return JsonResponse(421, {"id": "misdirected_request",
                                      "message": "This dashboard answers only to its own address "
                                                 f"({' or '.join(sorted(self._hosts))})."})
        if request.method == "GET" and (request.path in ("/", "/dashboard", "/dashboard/")
                                        or request.path.startswith("/dashboard/")):
            return await super().dispatch(request)  # static files: no data in them
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return _unauthorized("Log in first: `dynoctl dashboard` prints this dashboard's address with its token.")
        if not hmac.compare_digest(given.strip().encode(), self._token):
            return _unauthorized("Wrong token: `dynoctl dashboard` prints the current one.")
        if request.path == "/shutdown":
            return JsonResponse(403, {"id": "forbidden", "message": "Stop dynod with dynoctl, not from the dashboard."})
        return await super().dispatch(request)
