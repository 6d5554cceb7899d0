"""The ledger test suite's backends: every ledger test runs against SQLite and PostgreSQL.

A ``Backend`` opens connections to one fresh, private ledger (a temp SQLite file, or a schema of
its own in the session's private PostgreSQL) and runs raw SQL on it, so the tests can attack the
schema directly. Import ``backend`` and ``pg_server`` into a test module to use them.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from dynod.ledger.postgres import PostgresLedger
from dynod.ledger.sqlite import SqliteLedger

from .postgres_server import PostgresServer, unavailable_reason

_server: PostgresServer | None = None
_DATABASE = "ledger"


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Backend:
    name: str
    db_error: tuple[type[BaseException], ...]

    def open(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def sql(self, ledger: Any, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run raw SQL (``?`` placeholders) through the ledger's own connection; rows as tuples."""
        raise NotImplementedError

    def count(self, ledger: Any, table: str) -> int:
        return int(self.sql(ledger, f"SELECT COUNT(*) FROM {table}")[0][0])

    def build_old_schema(self, version: int) -> None:
        """The ledger as a dynod at schema v``version`` left it, holding one app, "shop"."""
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"
    db_error = (sqlite3.DatabaseError,)

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, **kwargs: Any) -> SqliteLedger:
        return SqliteLedger(self.path, **kwargs)

    def sql(self, ledger: Any, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in ledger.connection.execute(statement, params).fetchall()]

    def sql_many(self, ledger: Any, statement: str, rows: list[Sequence[Any]]) -> None:
        db = ledger.connection
        db.execute("BEGIN")
        db.executemany(statement, rows)
        db.execute("COMMIT")

    def build_old_schema(self, version: int) -> None:
        from dynod.ledger.sqlite import MIGRATIONS, _statements

        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = sqlite3.connect(self.path, isolation_level=None)
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version VALUES (?)", (version,))
        for script in MIGRATIONS[:version]:
            for statement in _statements(script):
                raw.execute(statement)
        raw.execute("INSERT INTO apps (name, created_at) VALUES ('shop', 0)")
        raw.close()


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, server: PostgresServer, schema: str) -> None:
        import psycopg

        self.db_error = (psycopg.Error,)
        self.server = server
        self.schema = schema
        # Each test's ledger lives in a schema of its own; the search path puts it first.
        self.url = server.url(_DATABASE) + f"&options=-csearch_path%3D{schema}"

    def open(self, **kwargs: Any) -> PostgresLedger:
        return PostgresLedger(self.url, **kwargs)

    def sql(self, ledger: Any, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = ledger.connection.execute(_pg(statement), params)
        if cursor.description is None:
            return []
        return [tuple(row.values()) for row in cursor.fetchall()]

    def sql_many(self, ledger: Any, statement: str, rows: list[Sequence[Any]]) -> None:
        conn = ledger.connection
        with conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(_pg(statement), rows)

    def build_old_schema(self, version: int) -> None:
        import psycopg

        from dynod.ledger.postgres import MIGRATIONS

        with psycopg.connect(self.url, autocommit=True) as raw:
            raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            raw.execute("INSERT INTO schema_version VALUES (%s)", (version,))
            for script in MIGRATIONS[:version]:
                raw.execute(script)
            raw.execute("INSERT INTO apps (name, created_at) VALUES ('shop', 0)")


def _pg(statement: str) -> str:
    return statement.replace("%", "%%").replace("?", "%s")


def shared_server() -> PostgresServer:
    global _server
    if _server is None:
        import psycopg

        server = PostgresServer()
        server.start()
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{_DATABASE}"')
        _server = server
    return _server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    yield shared_server()
    global _server
    if _server is not None:
        _server.stop()
        _server = None


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield SqliteBackend(tmp_path / "state" / "dynod.sqlite3")
        return
    import psycopg

    server = request.getfixturevalue("pg_server")
    schema = f"t_{secrets.token_hex(6)}"
    admin = psycopg.connect(server.url(_DATABASE), autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield PostgresBackend(server, schema)
    finally:
        # Any connection a test left open (a killed child's is already gone) must not hold locks.
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", (_DATABASE,))
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def ledger(backend: Backend) -> Iterator[Any]:
    led = backend.open(clock=FakeClock(), rng=random.Random(7))
    yield led
    led.close()
