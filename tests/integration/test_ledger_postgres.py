"""A real dynod whose ledger is PostgreSQL (``[ledger] url``), against a private server.

The ledger suite proves the backend's rules; this proves the daemon runs on it end to end: a
deploy's release, config and formation land in PostgreSQL (no SQLite file is made), a kill -9 of
dynod re-adopts the same dyno from it, and an empty database in its place is refused at start
like an empty SQLite file.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import PostgresServer, unavailable_reason

from .conftest import VENV_BIN, running_dynod, write_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    pg = PostgresServer()
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


def test_dynod_runs_on_a_postgresql_ledger(server: PostgresServer, tmp_path: Path) -> None:
    import psycopg

    database = server.create_database()
    url = server.url(database)
    # running_dynod writes [dynos] last-but-four; a table header after its lines starts [ledger].
    with running_dynod(dynos_extra=f'\n[ledger]\nurl = "{url}"\n') as d:
        app = f"t{secrets.token_hex(4)}"
        d.ctl("apps:create", app)
        d.ctl("config:set", "GREETING=from-postgres", "-a", app)
        d.ctl("deploy", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", app)
        before = {x["name"]: x["created_at"] for x in d.up(app, 1)}
        assert not (d.root / "state" / "dynod.sqlite3").exists()
        with psycopg.connect(url) as db:
            versions = db.execute("SELECT r.version, r.config, r.slug_id FROM releases r JOIN apps a"
                                  " ON a.id = r.app_id WHERE a.name = %s ORDER BY r.version", (app,)).fetchall()
            assert [v for v, _, _ in versions] == list(range(1, len(versions) + 1))
            assert '"GREETING":"from-postgres"' in versions[-1][1] and versions[-1][2] is not None
            assert db.execute("SELECT quantity FROM formation f JOIN apps a ON a.id = f.app_id "
                              "WHERE a.name = %s AND f.type = 'web'", (app,)).fetchone() == (1,)

        d.kill9()
        d.start()
        assert {x["name"]: x["created_at"] for x in d.up(app, 1)} == before  # adopted, not replaced
        assert "from-postgres" in d.ctl("config", "-a", app).stdout

        # An empty database where the ledger was: refused with one line, the dyno left running.
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=60) == 0
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" RENAME TO "{database}_kept"')
            admin.execute(f'CREATE DATABASE "{database}"')
        try:
            started = subprocess.run([str(VENV_BIN / "dynod"), "--config", str(d.config)], capture_output=True,
                                     text=True, env=d.env(), timeout=60)
            assert started.returncode == 1, started.stderr
            said = [line for line in started.stderr.splitlines() if line.startswith("dynod: ")]
            assert len(said) == 1 and "has no dynod schema (it is empty), but" in said[0], started.stderr
            assert "Traceback" not in started.stderr
            with psycopg.connect(url) as db:  # refused untouched: still no tables at all
                assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        finally:
            with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                admin.execute(f'ALTER DATABASE "{database}_kept" RENAME TO "{database}"')
            d.start()
        assert {x["name"]: x["created_at"] for x in d.up(app, 1)} == before
