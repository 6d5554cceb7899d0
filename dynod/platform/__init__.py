"""The platform as the API sees it: apps, config, releases, formation, dynos, logs, routes.

``rules`` holds what the platform decides (which config change makes which release, which
formation change is allowed, what a rollback releases), as pure functions shared by the daemon's
``Platform`` and the API tests' in-memory fake; ``platform`` joins those decisions to the ledger,
the dyno manager, the log stream and the router; ``addon_calls`` is the API's add-on block.
"""

from .platform import Platform, host_memory_mb
from .rules import CONFIG_LIMIT_BYTES, check_host_memory, formation_memory_mb, rfc3339

__all__ = ["CONFIG_LIMIT_BYTES", "Platform", "check_host_memory", "formation_memory_mb", "host_memory_mb",
           "rfc3339"]
