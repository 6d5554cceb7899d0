"""Users, their API tokens, and who may act on which app (owner and collaborators).

Kept in a store of its own (``state_dir/accounts.sqlite3``, 0600) rather than in the ledger: the
ledger is the app's history (releases, formation, add-ons) and is being reshaped by its own work;
accounts change on another rhythm, hold secrets (token hashes) the ledger's backups need not carry,
and a host that never serves the API over TCP never needs them. See docs/api.md.

The names below are imported from ``store`` on first use (dynod/exports.py).
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "AccountStore": "store",
    "Token": "store",
    "User": "store",
    "app_key": "store",
}, globals())
