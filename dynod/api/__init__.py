"""The control API: HTTP/1.1 + JSON over a unix socket, and its client.

- ``service``: the ``PlatformService`` Protocol the API calls (the daemon implements it);
- ``routes``: requests -> platform calls -> response values, no I/O;
- ``server``: ``serve_api``, the h11-on-trio adapter that serves ``routes`` on the socket;
- ``attach``: the sans-I/O frame protocol of ``dynoctl run``;
- ``client``: ``ApiClient``, stdlib only, which dynoctl and embedding programs use.

Importing this package imports none of its modules (each public name below is imported from its
module on first use, dynod/exports.py), so ``dynod.api.client`` stays free of trio and h11
(dynoctl starts in milliseconds).
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "ApiClient": "client",
    "AttachSession": "client",
    "default_socket_path": "client",
    "PlatformService": "service",
    "AttachedDyno": "service",
    "ApiRoutes": "routes",
    "Request": "routes",
    "JsonResponse": "routes",
    "TextResponse": "routes",
    "StreamResponse": "routes",
    "PlatformApi": "platform_api",
    "serve_api": "server",
    "serve_api_tcp": "server",
    "serve_api_tls": "server",
    "Frame": "attach",
    "FrameDecoder": "attach",
    "FrameType": "attach",
}, globals())
