"""The ledger's schema has one source (dynod/ledger/schema.py): both backends end up with the same.

A fresh SQLite ledger and a fresh PostgreSQL one (the session's private server) are read back
from their catalogs, and their tables, columns, keys, references, indexes and release triggers
compared, with each dialect's spelling of a type mapped to one name. The behaviour the CHECKs
and triggers give is tested on both backends by the ledger suite (test_ledger*.py).
"""

# The backend fixtures are imported by name; pytest passes them in as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynod.ledger import postgres, schema, sqlite
from tests.ledger_backends import Backend, SqliteBackend, backend, pg_server  # noqa: F401 - fixtures

Shape = dict[str, Any]
_PG_TYPES = {"bigint": "INTEGER", "integer": "INTEGER", "double precision": "REAL", "text": "TEXT"}


def _sqlite_shape(db: sqlite3.Connection) -> Shape:
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    shape: Shape = {"tables": {}, "triggers": sorted(
        r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"))}
    for table in tables:
        # Not null as declared: a primary key column counts (SQLite's pragma leaves it out).
        columns = {r[1]: (r[2], bool(r[3]) or r[5] > 0, r[4]) for r in db.execute(f"PRAGMA table_info({table})")}
        key = tuple(r[1] for r in sorted(db.execute(f"PRAGMA table_info({table})"), key=lambda r: r[5]) if r[5])
        unique, indexes = set(), set()
        for _, name, is_unique, origin, _partial in db.execute(f"PRAGMA index_list({table})"):
            cols = tuple(r[2] for r in db.execute(f"PRAGMA index_info({name})"))
            if origin == "u":
                unique.add(cols)
            elif origin == "c":
                indexes.add((name, cols, bool(is_unique)))
        refs = {(r[2], r[3], r[4], r[6]) for r in db.execute(f"PRAGMA foreign_key_list({table})")}
        shape["tables"][table] = {"columns": columns, "key": key, "unique": unique, "indexes": indexes,
                                  "refs": refs}
    return shape


def _pg_shape(conn: Any) -> Shape:
    def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:  # every selected column named apart
        return [tuple(r.values()) for r in conn.execute(sql, params).fetchall()]

    tables = [r[0] for r in rows("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                 "current_schema() ORDER BY table_name")]
    shape: Shape = {"tables": {}, "triggers": sorted(r[0] for r in rows(
        "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace"))}
    for table in tables:
        columns = {}
        for name, kind, nullable, default in rows(
                "SELECT column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s",
                table):
            default = re.sub(r"::text$", "", default) if default is not None else None
            columns[name] = (_PG_TYPES[kind], nullable == "NO", default)
        constraints = rows(
            "SELECT con.contype, array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i) "
            "JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols, "
            "ref.relname, array(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i) "
            "JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i) AS ref_cols, "
            "con.confdeltype "
            "FROM pg_constraint con LEFT JOIN pg_class ref ON ref.oid = con.confrelid "
            "WHERE con.conrelid = (current_schema() || '.' || %s)::regclass", table)
        key = next((tuple(c[1]) for c in constraints if c[0] == "p"), ())
        unique = {tuple(c[1]) for c in constraints if c[0] == "u"}
        on_delete = {"c": "CASCADE", "a": "NO ACTION"}
        refs = {(c[2], c[1][0], c[3][0], on_delete[c[4]]) for c in constraints if c[0] == "f"}
        indexes = {(name, tuple(cols), is_unique) for name, cols, is_unique in rows(
            "SELECT i.relname, array(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(n, o) "
            "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n ORDER BY k.o), x.indisunique "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = (current_schema() || '.' || %s)::regclass "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)", table)}
        shape["tables"][table] = {"columns": columns, "key": key, "unique": unique, "indexes": indexes,
                                  "refs": refs}
    return shape


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Iterator[Shape]:
    led = sqlite.SqliteLedger(tmp_path / "dynod.sqlite3")
    try:
        yield _sqlite_shape(led.connection)
    finally:
        led.close()


def test_both_backends_make_the_same_schema(fresh_sqlite: Shape, backend: Backend) -> None:
    if isinstance(backend, SqliteBackend):
        pytest.skip("the SQLite shape is the reference")
    led = backend.open()
    try:
        got = _pg_shape(led.connection)
    finally:
        led.close()
    assert set(got["tables"]) == set(fresh_sqlite["tables"])
    for table, expected in fresh_sqlite["tables"].items():
        assert got["tables"][table] == expected, table
    # TRUNCATE skips row triggers in PostgreSQL; SQLite has no TRUNCATE to refuse.
    assert set(got["triggers"]) - set(fresh_sqlite["triggers"]) == {"releases_no_truncate"}
    assert set(fresh_sqlite["triggers"]) <= set(got["triggers"])


def test_the_sqlite_shape_reader_sees_what_the_schema_declares(fresh_sqlite: Shape) -> None:
    # The comparison above is only as good as the readers: spot-check this one against the DDL.
    releases = fresh_sqlite["tables"]["releases"]
    assert releases["columns"]["slug_id"] == ("TEXT", False, None)
    assert releases["columns"]["created_at"] == ("REAL", True, None)
    assert releases["columns"]["addons"] == ("TEXT", True, "'[]'")
    assert releases["unique"] == {("app_id", "version")}
    assert releases["refs"] == {("apps", "app_id", "id", "CASCADE")}
    assert fresh_sqlite["tables"]["dynos"]["indexes"] == {("dynos_by_app", ("app_id", "name"), False)}
    assert fresh_sqlite["tables"]["formation"]["key"] == ("app_id", "type")


def test_every_release_column_but_status_is_guarded(fresh_sqlite: Shape) -> None:
    # A migration that adds a column to releases must add it to the no-update rule too.
    columns = set(fresh_sqlite["tables"]["releases"]["columns"])
    assert columns - {"status"} == set(schema.RELEASE_COLUMNS_V5)


def test_the_backends_take_their_scripts_from_the_one_source() -> None:
    assert sqlite.MIGRATIONS == schema.migrations(schema.SQLITE)
    assert postgres.MIGRATIONS == schema.migrations(schema.POSTGRES)
    assert sqlite.SCHEMA_VERSION == postgres.SCHEMA_VERSION == schema.SCHEMA_VERSION == 6
    for dialect, other in ((schema.SQLITE, schema.POSTGRES), (schema.POSTGRES, schema.SQLITE)):
        for script in schema.migrations(dialect):
            # No spelling of the other dialect leaks into a script.
            assert other.time not in script.replace(dialect.time, "") or other.time in dialect.time
    assert "plpgsql" not in "".join(sqlite.MIGRATIONS) and "json_valid" not in "".join(postgres.MIGRATIONS)
