"""The embedded ledger: one SQLite file in WAL mode under the rules of ``ledger.rules``.

Why SQLite: dynod is one host and one control-plane process, so an embedded database gives
transactions, crash safety and a schema that enforces rules, with nothing to run or configure.
WAL lets readers (``dynoctl releases`` while a deploy writes) proceed alongside one writer.

The rules the schema itself keeps (so raw SQL through any connection cannot break them):
- releases are append-only: a trigger refuses any UPDATE except ``status`` going from
  "pending" to "succeeded"/"failed", and any DELETE while the app still exists; destroying the
  app cascades to its releases, formation and dynos;
- a new release's version must be the app's max + 1 (so versions are gapless and
  ``INSERT OR REPLACE`` cannot swap a release out);
- config and process types are JSON objects; states, statuses and quantities are checked.

Every mutation runs in ``BEGIN IMMEDIATE``: the write lock is taken before the first read, so
"version = max + 1" is decided and written under the same lock and two connections can never
allocate the same version. A crash mid-transaction leaves the last committed state (SQLite's
journal); tests prove it by killing a forked process inside a transaction.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from .interface import LedgerMissing
from .rules import MAX_QUANTITY, LedgerRules
from .schema import SQLITE, migrations

__all__ = ["MAX_QUANTITY", "MIGRATIONS", "SCHEMA_VERSION", "SqliteLedger"]

# The scripts are written once for both backends (schema.py); here in SQLite's types and triggers.
MIGRATIONS: list[str] = migrations(SQLITE)
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteLedger(LedgerRules):
    """The default ``Ledger``. Safe to share between threads (one connection behind a lock)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        may_create: bool = True,
    ) -> None:
        super().__init__(clock=clock, rng=rng)
        self.path = str(path)
        self._may_create = may_create
        self._lock = threading.Lock()
        if self.path != ":memory:":
            self._prepare_file()
        try:
            # isolation_level=None: the driver issues no hidden BEGINs; every transaction here is
            # explicit, so what is atomic is visible in the code.
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise UserError(f"Cannot open the ledger at {self.path}: {exc}; check the path and its "
                            "permissions.", status=500, code="internal") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            # Before any pragma that writes (journal_mode does): a refused ledger stays untouched.
            if not may_create and self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None:
                raise LedgerMissing(f"The ledger at {self.path} has no tables")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
                # NORMAL in WAL keeps every commit atomic and the file consistent after a crash;
                # only the last commits before a power cut may be lost, never half of one.
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            # Without this, INSERT OR REPLACE deletes rows without firing delete triggers.
            self._db.execute("PRAGMA recursive_triggers = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise UserError(f"The ledger at {self.path} is not a usable SQLite database ({exc}); "
                            "move it aside or restore a backup.", status=500, code="internal") from None
        except BaseException:
            self._db.close()
            raise

    # ---- plumbing -------------------------------------------------------------------------

    def _prepare_file(self) -> None:
        """Refuse a lost ledger, or make the file (and its WAL and SHM) private: 0600.

        The file holds every app's config vars. It is created 0600 before SQLite opens it, and
        SQLite gives the -wal and -shm files the database's mode, so none is ever readable by
        others; files an older dynod left 0644 are tightened."""
        path = Path(self.path)
        size = path.stat().st_size if path.exists() else None
        if not self._may_create and not size:
            # Checked before connecting: opening would write a fresh header into the empty file.
            state = "missing" if size is None else "empty (0 bytes)"
            raise LedgerMissing(f"The ledger at {self.path} is {state}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if size is None:
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            except FileExistsError:
                pass  # another process made it first: it is tightened below like any other
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.chmod(f"{self.path}{suffix}", 0o600)
            except FileNotFoundError:
                pass

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection, for diagnostics and for tests proving the schema's own rules."""
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One mutation = one IMMEDIATE transaction: committed whole or not at all."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _busy(exc) from None
            try:
                yield self._db
            except BaseException:
                self._rollback()
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                raise _busy(exc) from None

    def _rollback(self) -> None:
        # Some errors (SQLITE_FULL, an interrupted statement) already rolled the transaction back.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # A deferred transaction gives a multi-statement read one consistent snapshot.
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            current = row["version"] if row else 0
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (0)")
            if current > SCHEMA_VERSION:
                raise UserError(
                    f"The ledger at {self.path} has schema v{current}, newer than this dynod knows "
                    f"(v{SCHEMA_VERSION}); upgrade dynod.", status=500, code="internal")
            for script in MIGRATIONS[current:]:
                # executescript would COMMIT our transaction; run statement by statement instead.
                for statement in _statements(script):
                    db.execute(statement)
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT version FROM schema_version").fetchone()["version"])

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ---- plumbing helpers --------------------------------------------------------------------

def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (trigger bodies contain ';', so let SQLite judge)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete statement in migration: {buffer.strip()[:60]!r}")


def _busy(exc: sqlite3.OperationalError) -> UserError:
    return UserError(f"The ledger is busy ({exc}); retry in a moment.", status=503, code="unavailable")
