"""The web dashboard: static pages shipped in the package, speaking the control API (docs/dashboard.md).

The routes and the listen/token helpers are imported from their modules on first use
(dynod/exports.py).
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "DashboardRoutes": "listener",
    "load_token": "listener",
    "parse_listen": "listener",
    "asset": "assets",
}, globals())
