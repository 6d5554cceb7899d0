"""Add-ons: Heroku's databases and stores attached to apps through config vars (docs/addons.md).

- ``addons``: ``Addons``, what the platform calls (create, attach, detach, destroy, backups);
- ``plans``: the services and their plans, add-on and attachment names (pure);
- ``provider``: the ``Provider`` Protocol; ``postgresql``, ``redis``: the built-in providers, each
  add-on its own server, kept running by ``servers.ServerSupervisor``; ``partner``: add-ons an
  outside provider runs (from settings);
- ``backups``: ``pg:backups`` captures, their store and schedules.

Each public name is imported from its module on first use (dynod/exports.py), so importing one
module of the package never loads the others.
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "Addons": "addons",
    "Plan": "plans",
    "Service": "plans",
    "parse_spec": "plans",
    "Provider": "provider",
    "Provisioned": "provider",
    "PostgresProvider": "postgresql",
    "PostgresOperations": "postgresql",
    "RedisProvider": "redis",
    "PartnerProvider": "partner",
    "partner_services": "partner",
    "ServerSupervisor": "servers",
    "Backup": "backups",
    "BackupStore": "backups",
}, globals())
