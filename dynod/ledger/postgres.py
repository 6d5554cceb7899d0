"""The ledger in PostgreSQL (psycopg 3), under the same rules as the embedded one.

Why: it is the seam several dynod hosts will share (docs/ledger.md, "Several hosts"). SQLite
stays the default for one host; ``[ledger] url = "postgresql://..."`` selects this.

How writers are kept apart: transactions run at READ COMMITTED, and every write on an app first
locks that app's row (``SELECT ... FOR UPDATE``), so "version = max + 1" is read and written under
one lock per app, not one lock for the whole ledger as in SQLite. Choosing a uid locks
``app_uids`` (uids are shared between apps). Races the locks do not cover are decided by unique
indexes (``ON CONFLICT DO NOTHING``), never by a check-then-insert. Row locks, not advisory locks:
advisory locks are per session and break behind a transaction pooler.

The schema keeps the same rules as SQLite's even against raw SQL, with PL/pgSQL triggers:
releases are append-only (UPDATE only moves a pending status; DELETE only through the app's own
deletion; TRUNCATE refused), versions are gapless, JSON columns hold objects. A client killed
mid-transaction takes its transaction with it: the server rolls back when the connection drops.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import UserError
from .interface import LedgerMissing, redacted
from .rules import LedgerRules
from .schema import POSTGRES, migrations

# The scripts are written once for both backends (schema.py), so a version means the same tables
# in either; here in PostgreSQL's types and PL/pgSQL triggers.
MIGRATIONS: list[str] = migrations(POSTGRES)
SCHEMA_VERSION = len(MIGRATIONS)


class _Tx:
    """The rules' ``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` doubled)."""

    __slots__ = ("_conn",)
    _converted: dict[str, str] = {}

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        converted = self._converted.get(sql)
        if converted is None:
            # The rules' SQL has no '?' inside string literals, so this rewrite is exact.
            converted = self._converted[sql] = sql.replace("%", "%%").replace("?", "%s")
        return self._conn.execute(converted, params)


class PostgresLedger(LedgerRules):
    """A ``Ledger`` in one PostgreSQL database. Safe to share between threads (one connection
    behind a lock); a connection that broke is replaced on the next call."""

    _lock_app_clause = " FOR UPDATE"

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        may_create: bool = True,
    ) -> None:
        super().__init__(clock=clock, rng=rng)
        self._may_create = may_create
        try:
            import psycopg
        except ImportError:  # pragma: no cover - a dependency, but say what to do if it is gone
            raise UserError("[ledger] url names PostgreSQL but psycopg is not installed: "
                            "pip install 'psycopg[binary]'.", status=500, code="internal") from None
        self._psycopg = psycopg
        self.url = url
        self._where = redacted(url)
        self._busy_timeout = busy_timeout
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        with self._lock:
            self._connect()
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    # ---- plumbing -------------------------------------------------------------------------

    @property
    def connection(self) -> Any:
        """The raw psycopg connection (autocommit), for diagnostics and for the schema's tests."""
        with self._lock:
            self._ensure_connected()
            return self._conn

    def _connect(self) -> None:
        from psycopg.rows import dict_row

        try:
            # autocommit: the driver opens no hidden transaction; BEGIN/COMMIT are explicit here,
            # as in the SQLite backend, so what is atomic is visible in the code.
            self._conn = self._psycopg.connect(
                self.url, autocommit=True, row_factory=dict_row,
                connect_timeout=max(1, int(self._connect_timeout)), application_name="dynod")
        except self._psycopg.Error as exc:
            self._conn = None
            raise UserError(f"Cannot reach the ledger at {self._where}: {_first_line(exc)}; check "
                            "[ledger] url and that the server is up.", status=503,
                            code="unavailable") from None

    def _ensure_connected(self) -> None:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._connect()

    @contextmanager
    def _transaction(self, begin: str, *, map_errors: bool = True) -> Iterator[_Tx]:
        psycopg = self._psycopg
        with self._lock:
            self._ensure_connected()
            try:
                self._conn.execute(begin)
            except psycopg.OperationalError:
                # An idle connection the server dropped (a restart, a failover, an idle timeout):
                # nothing was done yet, so connect again (a 503 if that fails) and begin again.
                self._conn.close()
                self._connect()
                try:
                    self._conn.execute(begin)
                except psycopg.Error as exc:
                    if map_errors:
                        raise self._user_error(exc) from None
                    raise
            conn = self._conn
            try:
                yield _Tx(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if not conn.closed and not conn.broken:
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        conn.close()  # unknown state: the next call reconnects
                if map_errors and isinstance(exc, psycopg.Error):
                    raise self._user_error(exc) from None
                raise

    def _begin(self, mode: str) -> str:
        # One round trip (a parameterless execute may carry several statements). SET LOCAL, not a
        # session SET: behind a transaction pooler the next transaction may run on another
        # server connection, so the transaction carries its own timeout. A writer waits this
        # long for another's row lock, then gets a clean 503.
        return f"BEGIN ISOLATION LEVEL {mode}; SET LOCAL lock_timeout = {int(self._busy_timeout * 1000)}"

    def _write(self) -> Any:
        return self._transaction(self._begin("READ COMMITTED"))

    def _read(self) -> Any:
        # REPEATABLE READ READ ONLY: a multi-query read sees one snapshot, as SQLite's does.
        return self._transaction(self._begin("REPEATABLE READ READ ONLY"))

    def _lock_uids(self, db: Any) -> None:
        # SHARE ROW EXCLUSIVE conflicts with itself: uid choosers run one at a time, while
        # readers (and the UNIQUE index) are unaffected.
        db.execute("LOCK TABLE app_uids IN SHARE ROW EXCLUSIVE MODE")

    def _user_error(self, exc: Exception) -> UserError:
        errors = self._psycopg.errors
        if isinstance(exc, (errors.LockNotAvailable, errors.DeadlockDetected,
                            errors.SerializationFailure, errors.QueryCanceled)):
            return UserError(f"The ledger is busy ({_first_line(exc)}); retry in a moment.",
                             status=503, code="unavailable")
        if isinstance(exc, self._psycopg.OperationalError):
            return UserError(f"The ledger at {self._where} is unreachable ({_first_line(exc)}); "
                             "retry in a moment.", status=503, code="unavailable")
        return UserError(f"The ledger refused the change: {_first_line(exc)}.", status=500,
                         code="internal")

    def _migrate(self) -> None:
        psycopg = self._psycopg
        for attempt in range(3):
            try:
                with self._transaction(self._begin("READ COMMITTED"), map_errors=False) as db:
                    self._migrate_in(db)
                return
            except psycopg.errors.UniqueViolation as exc:
                # Two dynods creating schema_version at the same moment: the loser tries again
                # and then finds the table (and the lock) there.
                if attempt == 2:
                    raise self._user_error(exc) from None
            except psycopg.Error as exc:
                raise self._user_error(exc) from None

    def _migrate_in(self, db: Any) -> None:
        if not self._may_create and db.execute(
                "SELECT to_regclass('schema_version') AS t").fetchone()["t"] is None:
            raise LedgerMissing(f"The ledger database at {self._where} has no dynod schema (it is empty)")
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        # Migrations of one database run one at a time, whichever host starts them.
        db.execute("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        current = row["version"] if row else 0
        if row is None:
            db.execute("INSERT INTO schema_version (version) VALUES (0)")
        if current > SCHEMA_VERSION:
            raise UserError(
                f"The ledger at {self._where} has schema v{current}, newer than this dynod knows "
                f"(v{SCHEMA_VERSION}); upgrade dynod.", status=500, code="internal")
        for script in MIGRATIONS[current:]:
            db._conn.execute(script)  # DDL scripts carry no parameters; '%' stays literal
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT version FROM schema_version").fetchone()["version"])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
