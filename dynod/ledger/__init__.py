"""The state store behind one interface.

``Ledger`` (``interface``) is what the rest of dynod codes against; ``open_ledger`` (``backends``)
opens the one a URL names; ``guard`` refuses to start on a ledger that went missing.
``ledger.rules`` implements it once above the storage; ``SqliteLedger`` (embedded, the default) and
``PostgresLedger`` (the seam several hosts will share) supply only connections, transactions,
schema and error mapping. Rules every implementation keeps:

- releases are append-only: v1, v2, ... per app, never updated or deleted while the app exists
  (the schema refuses it, not just this code); only ``set_release_status`` may move a release
  from "pending" to "succeeded"/"failed";
- every mutation is one transaction, so a crash at any point leaves the ledger consistent;
- methods raise ``dynod.errors.NotFound`` / ``UserError`` / ``Conflict`` with a user-facing
  sentence, never a driver exception.
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "Ledger": "interface",
    "LedgerMissing": "interface",
    "redacted": "interface",
    "open_ledger": "backends",
    "LedgerRules": "rules",
    "SqliteLedger": "sqlite",
    "PostgresLedger": "postgres",
    "open_ledger_of": "guard",
    "secure_state_dir": "guard",
}, globals())
