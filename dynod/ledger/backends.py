"""Which ledger a ``[ledger] url`` names, opened: PostgreSQL, or the embedded SQLite file.

Each backend is imported only when it is named, so a SQLite host never loads psycopg.
"""

from __future__ import annotations

from ..errors import UserError
from .interface import Ledger, redacted


def open_ledger(url: str, *, may_create: bool = True) -> Ledger:
    """The ledger ``url`` names: ``postgresql://...`` (or ``postgres://``) is PostgreSQL; a
    ``sqlite:///abs/path`` URL or an absolute file path is the embedded SQLite ledger.

    ``may_create=False``: a ledger that has no schema yet raises ``LedgerMissing`` and is left
    exactly as it was, instead of being initialised empty (see ``ledger.guard``)."""
    if not isinstance(url, str) or not url:
        raise UserError(f"[ledger] url {url!r} is not a URL: use postgresql://user@host/db, or leave it "
                        "out for the SQLite file in the state dir.", status=500, code="internal")
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        from .postgres import PostgresLedger

        return PostgresLedger(url, may_create=may_create)
    if sep and scheme == "sqlite":
        path = rest
    elif sep:
        raise UserError(f"[ledger] url {redacted(url)!r}: unknown scheme {scheme!r}; use postgresql://... "
                        "or a SQLite file path.", status=500, code="internal")
    else:
        path = url
    if path != ":memory:" and not path.startswith("/"):
        # A relative path would depend on dynod's working directory, and a libpq "key=value"
        # string would silently become a file of that name.
        raise UserError(f"[ledger] url {redacted(url)!r}: give an absolute path (sqlite:////var/lib/dynod/"
                        "dynod.sqlite3, or just the path) or a postgresql:// URL.",
                        status=500, code="internal")
    from .sqlite import SqliteLedger

    return SqliteLedger("/" + path.lstrip("/") if path != ":memory:" else path, may_create=may_create)
