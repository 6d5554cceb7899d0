"""The control API: HTTP/1.1 + JSON over a unix socket, and its client.

- ``service``: the ``PlatformService`` Protocol the API calls (the daemon implements it);
- ``routes``: requests -> platform calls -> response values, no I/O;
- ``server``: ``serve_api``, the h11-on-trio adapter that serves ``routes`` on the socket;
- ``attach``: the sans-I/O frame protocol of ``dynoctl run``;
- ``client``: ``ApiClient``, stdlib only, which dynoctl and embedding programs use.

Importing this package imports nothing else, so ``dynod.api.client`` stays free of trio (dynoctl
starts in milliseconds); ``serve_api`` and ``ApiClient`` are loaded on first use.
"""

from __future__ import annotations

# typing itself costs dynoctl ~5 ms of startup; the constant is all that is needed from it here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .client import ApiClient
    from .server import serve_api

__all__ = ["ApiClient", "serve_api"]


def __getattr__(name: str) -> object:
    if name == "serve_api":
        from .server import serve_api

        return serve_api
    if name == "ApiClient":
        from .client import ApiClient

        return ApiClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
