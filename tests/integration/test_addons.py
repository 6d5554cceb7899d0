"""Add-ons against real servers: PostgreSQL 15 and redis-server from Debian, run by a private dynod.

Each test makes its own app(s) on the session's dynod; add-ons are destroyed with them. What is
proved: config vars and releases, dynos that read and write through DATABASE_URL and REDIS_URL
over the dyno network, another app that cannot connect even with the URL, servers killed with
-9 (and dynod itself) losing no committed row, and nothing left behind by a destroy.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Dynod

pytestmark = pytest.mark.integration


def new_app(dynod: Dynod) -> str:
    name = f"a{secrets.token_hex(4)}"
    dynod.ctl("apps:create", name)
    return name


@pytest.fixture
def apps(dynod: Dynod) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        dynod.ctl("apps:destroy", "-a", name, "--confirm", name, check=False)


def state(dynod: Dynod) -> Path:
    return dynod.root / "state"


def addon_processes(name: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"/mnt/{name}/" in line]


def addon_cgroups(dynod: Dynod, name: str) -> list[str]:
    found = []
    for base, dirs, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(base) == f"{dynod.cgroup_name}-addons":
            found += [os.path.join(base, d) for d in dirs if d == name]
            dirs.clear()
        elif base.count("/") > 7:
            dirs.clear()
    return found


def test_create_sets_config_vars_and_records_the_addons_in_each_release(dynod: Dynod, apps: list[str]) -> None:
    app = new_app(dynod)
    apps.append(app)
    out = dynod.ctl("addons:create", "heroku-postgresql:essential-0", "-a", app).stdout
    assert "as DATABASE_URL" in out, out
    pg = json.loads(json.dumps(dynod.client().list_addons(app)))[0]
    assert pg["plan"]["name"] == "heroku-postgresql:essential-0" and pg["config_vars"] == ["DATABASE_URL"]
    dynod.ctl("addons:create", "heroku-redis", "-a", app)
    second = dynod.ctl("addons:create", "heroku-postgresql", "-a", app).stdout
    assert "HEROKU_POSTGRESQL_" in second and "_URL" in second
    config = dynod.client().request("GET", f"/apps/{app}/config-vars")
    assert config["DATABASE_URL"].startswith("postgres://") and config["REDIS_URL"].startswith("redis://:")
    assert len([k for k in config if k.startswith("HEROKU_POSTGRESQL_")]) == 1
    releases = dynod.client().request("GET", f"/apps/{app}/releases")
    assert [r["description"].split(" (")[0] for r in releases[1:]] == [
        "Attach DATABASE", "Attach REDIS", f"Attach {[k for k in config if k.startswith('HEROKU_')][0][:-4]}"]
    assert [len(r["addons"]) for r in releases] == [0, 1, 2, 3]
    info = dynod.ctl("releases:info", "-a", app).stdout
    assert "Add-ons" in info and pg["name"] in info, info
    # The servers really run, each in its own cgroup, with data under the state dir.
    for addon in dynod.client().list_addons(app):
        assert addon_processes(addon["name"]), addon["name"]
        assert addon_cgroups(dynod, addon["name"])
        assert (state(dynod) / "addons" / addon["name"]).is_dir()
    listing = dynod.ctl("addons", "-a", app).stdout
    assert "as DATABASE" in listing and "as REDIS" in listing


def test_bad_input_is_one_clear_line_and_changes_nothing(dynod: Dynod, apps: list[str]) -> None:
    app = new_app(dynod)
    apps.append(app)
    dynod.ctl("addons:create", "heroku-redis", "-a", app, "--name", f"redis-{app}")
    before = dynod.client().request("GET", f"/apps/{app}/releases")
    cases = [
        (["addons:create", "heroku-mysql", "-a", app], "Couldn't find that add-on service"),
        (["addons:create", "heroku-postgresql:gigantic-9", "-a", app], "Couldn't find that plan"),
        (["addons:create", "heroku-redis", "-a", app, "--name", f"redis-{app}"], "already taken"),
        (["addons:create", "heroku-redis", "-a", app, "--as", "REDIS"], "already has an attachment named REDIS"),
        (["addons:create", "heroku-redis", "-a", app, "--as", "lower-case"], "Invalid attachment name"),
        (["addons:attach", f"redis-{app}", "-a", "no-such-app"], "Couldn't find that app"),
        (["addons:destroy", "nope", "-a", app, "--confirm", "nope"], "Couldn't find that add-on"),
        (["addons:plans", "heroku-nothing"], "Couldn't find that add-on service"),
    ]
    for argv, message in cases:
        result = dynod.ctl(*argv, check=False)
        assert result.returncode == 1 and message in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert dynod.client().request("GET", f"/apps/{app}/releases") == before
    assert [a["name"] for a in dynod.client().list_addons(app)] == [f"redis-{app}"]


APP_WEB = r'''
import http.server, json, os
import psycopg, redis
DB, R = os.environ["DATABASE_URL"], redis.from_url(os.environ["REDIS_URL"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path, _, arg = self.path.partition("?")
        if path == "/write":
            with psycopg.connect(DB) as conn:
                conn.execute("INSERT INTO items (v) VALUES (%s)", (arg,))
            body = "ok"
        elif path == "/read":
            with psycopg.connect(DB) as conn:
                body = json.dumps([row[0] for row in conn.execute("SELECT v FROM items ORDER BY id")])
        elif path == "/push":
            R.lpush("jobs", arg)
            body = "queued"
        elif path == "/done":
            body = json.dumps(sorted(x.decode() for x in R.smembers("done")))
        else:
            body = "?"
        data = body.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
'''
APP_WORKER = r'''
import os, redis
R = redis.from_url(os.environ["REDIS_URL"])
print("worker up", flush=True)
while True:
    job = R.brpop("jobs", timeout=5)
    if job:
        R.sadd("done", job[1].decode() + " by " + os.environ["DYNO"])
'''
# sslmode=require, as Heroku's Django template connects (dj_database_url's ssl_require=True):
# Heroku Postgres always offers SSL, and so must the add-on.
APP_MIGRATE = r'''
import os, psycopg
with psycopg.connect(os.environ["DATABASE_URL"], sslmode="require") as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, v text NOT NULL)")
    print("migrated items, ssl in use:", conn.pgconn.ssl_in_use, flush=True)
'''


def write_db_app(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Procfile").write_text("web: python web.py\nworker: python worker.py\nrelease: python migrate.py\n")
    (path / "requirements.txt").write_text("psycopg[binary]>=3.1\nredis>=5\n")
    (path / "web.py").write_text(APP_WEB)
    (path / "worker.py").write_text(APP_WORKER)
    (path / "migrate.py").write_text(APP_MIGRATE)
    return path


def get(dynod: Dynod, app: str, path: str, timeout: float = 10) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{dynod.http_port}{path}", headers={"Host": f"{app}.localhost"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


def wait_get(dynod: Dynod, app: str, path: str, want: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            last = get(dynod, app, path)
            if want in last:
                return last
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise AssertionError(f"GET {path} never gave {want!r}; last: {last}\n{dynod.logs(app)[-3000:]}")


def can_connect_from_dyno(dynod: Dynod, app: str, url: str) -> bool:
    host, port = url.rsplit("@", 1)[1].split("/")[0].split(":")
    code = (f"import socket; s = socket.socket(); s.settimeout(3)\n"
            f"try:\n    s.connect(({host!r}, {port})); print('CONNECTED')\n"
            f"except OSError as e:\n    print('REFUSED', e)\n")
    out = dynod.ctl("run", "-a", app, "--", "python3", "-c", code, timeout=60).stdout
    assert "CONNECTED" in out or "REFUSED" in out, out
    return "CONNECTED" in out


@pytest.fixture(scope="module")
def db_app(dynod: Dynod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An app with Postgres and Redis, deployed with a release phase, a web and a worker dyno."""
    app = new_app(dynod)
    try:
        dynod.ctl("addons:create", "heroku-postgresql", "-a", app)
        dynod.ctl("addons:create", "heroku-redis", "-a", app)
        out = dynod.ctl("deploy", str(write_db_app(tmp_path_factory.mktemp("dbapp"))), "-a", app, timeout=600).stdout
        assert "deployed as" in out, out
        dynod.ctl("ps:scale", "worker=1", "-a", app)
        dynod.up(app, 1)
        yield app
    finally:
        dynod.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


def test_a_dyno_writes_and_reads_through_database_url_after_a_release_phase_migration(
        dynod: Dynod, db_app: str) -> None:
    assert "migrated items, ssl in use: True" in dynod.logs(db_app)
    assert wait_get(dynod, db_app, "/write?first", "ok") == "ok"
    get(dynod, db_app, "/write?second")
    assert json.loads(get(dynod, db_app, "/read")) == ["first", "second"]


def test_web_and_worker_share_a_redis_queue(dynod: Dynod, db_app: str) -> None:
    for job in ("job-a", "job-b", "job-c"):
        assert wait_get(dynod, db_app, f"/push?{job}", "queued") == "queued"
    done = wait_get(dynod, db_app, "/done", "job-c", timeout=30)
    assert sorted(json.loads(done)) == ["job-a by worker.1", "job-b by worker.1", "job-c by worker.1"]


def test_another_app_cannot_connect_even_with_the_url(dynod: Dynod, db_app: str, apps: list[str],
                                                       tmp_path: Path) -> None:
    from .conftest import write_app

    other = new_app(dynod)
    apps.append(other)
    dynod.ctl("deploy", str(write_app(tmp_path / "other", "web: python3 web.py\n")), "-a", other, timeout=300)
    config = dynod.client().request("GET", f"/apps/{db_app}/config-vars")
    for var in ("DATABASE_URL", "REDIS_URL"):
        assert can_connect_from_dyno(dynod, db_app, config[var]), var
        assert not can_connect_from_dyno(dynod, other, config[var]), var
    # Attached, it can; detached again, it cannot.
    addon = next(a["name"] for a in dynod.client().list_addons(db_app) if a["addon_service"]["name"] == "heroku-redis")
    out = dynod.ctl("addons:attach", addon, "-a", other, "--as", "SHARED").stdout
    assert "SHARED_URL" in out
    assert can_connect_from_dyno(dynod, other, config["REDIS_URL"])
    dynod.ctl("addons:detach", "SHARED", "-a", other)
    assert not can_connect_from_dyno(dynod, other, config["REDIS_URL"])


def admin_url(d: Dynod, name: str) -> str:
    """The superuser's way in, over the cluster's unix socket (pg_hba.conf admits the app's role
    only from the dyno subnet, and the host's own address is not in it)."""
    import sqlite3
    from urllib.parse import quote

    db = sqlite3.connect(state(d) / "dynod.sqlite3")
    data = json.loads(db.execute("SELECT provider_data FROM addons WHERE name = ?", (name,)).fetchone()[0])
    db.close()
    socket_dir = quote(str(state(d) / "addons" / name / "run"), safe="")
    return (f"postgresql://postgres:{data['superuser_password']}@/{data['database']}"
            f"?host={socket_dir}&port={data['port']}")


def _count(url: str) -> int:
    import psycopg

    with psycopg.connect(url, connect_timeout=3) as conn:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])  # type: ignore[index]


def _wait_count(url: str, timeout: float = 60) -> int:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            return _count(url)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _insert(url: str, first: int, n: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(first, first + n):
            conn.execute("INSERT INTO items (v) VALUES (%s)", (f"row-{i}",))  # each one committed


def _pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def test_kill_9_of_the_servers_of_dynod_and_a_full_stop_lose_nothing(tmp_path: Path) -> None:
    """The host reaches the add-on's port itself (the bridge address is its own), as a client on
    the dyno network would; a test of its own dynod, since dynod itself is killed."""
    import psycopg
    import redis

    from .conftest import running_dynod

    with running_dynod() as d:
        app = new_app(d)
        d.ctl("addons:create", "heroku-postgresql", "-a", app)
        d.ctl("addons:create", "heroku-redis", "-a", app)
        config = d.client().request("GET", f"/apps/{app}/config-vars")
        pg_name, redis_name = sorted(a["name"] for a in d.client().list_addons(app))
        db, kv = admin_url(d, pg_name), redis.from_url(config["REDIS_URL"])
        home = state(d) / "addons"
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id serial PRIMARY KEY, v text NOT NULL)")
        _insert(db, 0, 200)
        kv.set("greeting", "hello")
        time.sleep(1.5)  # appendfsync everysec: past the second, the write is on disk

        # kill -9 of each server: dynod starts it again, every committed row and key is there.
        old_pg = _pid(home / pg_name / "postgres.pid")
        os.kill(old_pg, signal.SIGKILL)
        os.kill(_pid(home / redis_name / "redis.pid"), signal.SIGKILL)
        assert _wait_count(db) == 200
        d.wait_for(lambda: _safe(lambda: kv.get("greeting")) == b"hello", what="redis back")
        assert _pid(home / pg_name / "postgres.pid") != old_pg
        assert "its server exited; restarting it" in d.logs(app)

        # kill -9 of dynod: the servers keep serving, and the next dynod adopts them.
        _insert(db, 200, 50)
        pg_pid = _pid(home / pg_name / "postgres.pid")
        d.kill9()
        assert _count(db) == 250 and kv.get("greeting") == b"hello"  # served while no dynod runs
        d.start()
        d.wait_for(lambda: _safe(lambda: d.client().list_addons(app)), what="dynod back")
        assert _pid(home / pg_name / "postgres.pid") == pg_pid  # adopted, not restarted
        os.kill(pg_pid, signal.SIGKILL)  # and supervised again
        assert _wait_count(db) == 250

        # A full stop (as at a host's shutdown) stops the servers; the next start brings them back.
        with d.client() as client:
            client.request("POST", "/shutdown", {"stop_dynos": True})
        assert d.proc is not None
        d.proc.wait(timeout=60)
        assert not addon_processes(pg_name) and not addon_processes(redis_name)
        for file in ("server.crt", "server.key"):  # as an add-on provisioned before dynod offered SSL
            (home / pg_name / file).unlink()
        d.start()
        d.wait_for(lambda: _safe(lambda: _count(db)) == 250, timeout=60, what="postgres back after a full stop")
        assert kv.get("greeting") == b"hello"
        key = home / pg_name / "server.key"
        assert key.stat().st_mode & 0o777 == 0o600 and key.owner() == "postgres"  # as PostgreSQL requires
        with psycopg.connect(db, autocommit=True) as conn:
            assert conn.execute("SHOW ssl").fetchone() == ("on",)


def _safe(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except Exception:  # noqa: BLE001 - "not yet" for a wait loop
        return None


def test_destroy_removes_every_trace(dynod: Dynod, apps: list[str]) -> None:
    app = new_app(dynod)
    apps.append(app)
    dynod.ctl("addons:create", "heroku-postgresql", "-a", app, "--name", f"postgresql-{app}")
    name = f"postgresql-{app}"
    port = dynod.client().request("GET", f"/apps/{app}/config-vars")["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]
    refused = dynod.ctl("addons:destroy", name, "-a", app, "--confirm", "wrong", check=False)
    assert refused.returncode == 1 and "did not match" in refused.stderr
    out = dynod.ctl("addons:destroy", name, "-a", app, "--confirm", name).stdout
    assert "done" in out
    assert dynod.client().list_addons(app) == []
    assert "DATABASE_URL" not in dynod.client().request("GET", f"/apps/{app}/config-vars")
    assert not addon_processes(name) and not addon_cgroups(dynod, name)
    assert not (state(dynod) / "addons" / name).exists()
    rules = subprocess.run(["nft", "list", "table", "inet", f"dynod_{dynod.bridge}"], capture_output=True,
                           text=True).stdout
    assert f"offer_tcp_{port}" not in rules


def _as_app_role(d: Dynod, name: str):  # type: ignore[no-untyped-def]
    """A superuser session over the socket acting as the add-on's own role (its tables are the role's)."""
    import sqlite3

    import psycopg

    db = sqlite3.connect(state(d) / "dynod.sqlite3")
    user = json.loads(db.execute("SELECT provider_data FROM addons WHERE name = ?", (name,)).fetchone()[0])["user"]
    db.close()
    # A server whose WAL write hit a full disk PANICs and restarts itself (PostgreSQL's crash
    # recovery, seconds): a client connecting meanwhile is refused, as a user's would be, and retries.
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = psycopg.connect(admin_url(d, name), autocommit=True)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    conn.execute(f'SET ROLE "{user}"')
    return conn


def test_backup_restore_and_download_round_trip_real_data(dynod: Dynod, apps: list[str], tmp_path: Path) -> None:
    app, other = new_app(dynod), new_app(dynod)
    apps += [app, other]
    dynod.ctl("addons:create", "heroku-postgresql", "-a", app, "--name", f"postgresql-{app}")
    dynod.ctl("addons:create", "heroku-postgresql", "-a", other, "--name", f"postgresql-{other}")
    name = f"postgresql-{app}"
    with _as_app_role(dynod, name) as conn:
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, v text NOT NULL)")
        conn.execute("INSERT INTO items (v) SELECT 'row-' || g FROM generate_series(1, 1000) g")
    out = dynod.ctl("pg:backups:capture", "-a", app).stdout
    assert "b001" in out and "verified" in out
    listing = dynod.ctl("pg:backups", "-a", app).stdout
    assert "b001" in listing and "Completed" in listing

    # Changed after the backup: the restore brings back exactly what was captured.
    with _as_app_role(dynod, name) as conn:
        conn.execute("DELETE FROM items WHERE id > 10")
        conn.execute("CREATE TABLE later (x int)")
    dynod.ctl("pg:backups:restore", "b001", "DATABASE", "-a", app, "--confirm", app)
    with _as_app_role(dynod, name) as conn:
        assert conn.execute("SELECT count(*), max(v) FROM items").fetchone() == (1000, "row-999")
        assert conn.execute("SELECT to_regclass('later')").fetchone()[0] is None
        conn.execute("INSERT INTO items (v) VALUES ('after restore')")  # the app's role owns it again

    target = tmp_path / "latest.dump"
    dynod.ctl("pg:backups:download", "-a", app, "-o", str(target))
    toc = subprocess.run(["pg_restore", "--list", str(target)], capture_output=True, text=True, check=True).stdout
    assert "TABLE public items" in toc and "TABLE DATA public items" in toc

    before = dynod.ctl("pg:backups", "-a", other).stdout
    bad = [
        (["pg:backups:restore", "b999", "-a", app, "--confirm", app], "Couldn't find that backup"),
        (["pg:backups:restore", "b001", f"postgresql-{other}", "-a", app, "--confirm", app],
         "Couldn't find that Postgres add-on on"),
        (["pg:backups:restore", "b001", "-a", app, "--confirm", "nope"], "did not match"),
        (["pg:backups:schedule", "-a", app, "--at", "25:99 Mars/Olympus"], "Invalid schedule"),
        (["pg:backups:schedule", "-a", app, "--at", "02:00 Mars/Olympus"], "unknown time zone"),
        (["pg:backups:download", "b777", "-a", app, "-o", str(tmp_path / "x.dump")], "Couldn't find that backup"),
        (["pg:backups:delete", "../b001", "-a", app, "--confirm", app], "Couldn't find that backup"),
    ]
    for argv, message in bad:
        result = dynod.ctl(*argv, check=False)
        assert result.returncode == 1 and message in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.dump").exists() and not (tmp_path / "x.dump.part").exists()
    assert dynod.ctl("pg:backups", "-a", other).stdout == before
    with _as_app_role(dynod, name) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 1001  # untouched by the refusals

    out = dynod.ctl("pg:backups:schedule", "-a", app, "--at", "02:00 America/New_York").stdout
    assert "daily backups of postgresql-" in out and "the last 5 kept" in out
    assert "daily at 02:00 America/New_York" in dynod.ctl("pg:backups", "-a", app).stdout

    # Destroy takes a final backup first, kept after the add-on is gone, restorable.
    out = dynod.ctl("addons:destroy", name, "-a", app, "--confirm", name).stdout
    assert "Final backup f001 kept" in out
    final = tmp_path / "final.dump"
    dynod.ctl("pg:backups:download", "f001", "-a", app, "-o", str(final))
    assert "TABLE DATA public items" in subprocess.run(["pg_restore", "--list", str(final)], capture_output=True,
                                                      text=True, check=True).stdout
    assert "No backup schedules" in dynod.ctl("pg:backups", "-a", app).stdout
    dynod.ctl("pg:backups:delete", "b001", "-a", app, "--confirm", app)
    assert "b001" not in dynod.ctl("pg:backups", "-a", app).stdout


def test_reset_ps_kill_and_redis_cli(dynod: Dynod, apps: list[str]) -> None:
    import threading

    import psycopg

    app = new_app(dynod)
    apps.append(app)
    dynod.ctl("addons:create", "heroku-postgresql", "-a", app, "--name", f"postgresql-{app}")
    dynod.ctl("addons:create", "heroku-redis", "-a", app)
    name = f"postgresql-{app}"
    with _as_app_role(dynod, name) as conn:
        conn.execute("CREATE TABLE t (x int)")
    errors: list[str] = []

    def sleeper() -> None:
        try:
            with _as_app_role(dynod, name) as conn:
                conn.execute("SELECT pg_sleep(60)")
        except psycopg.Error as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=sleeper)
    thread.start()
    pid = dynod.wait_for(lambda: next((line.split()[0] for line in dynod.ctl("pg:ps", "-a", app).stdout.splitlines()
                                       if "pg_sleep" in line), None), what="the session in pg:ps")
    assert "canceling statement" not in "".join(errors)
    dynod.ctl("pg:kill", pid, "-a", app)
    thread.join(timeout=10)
    assert not thread.is_alive() and "canceling statement due to user request" in "".join(errors)
    missing = dynod.ctl("pg:kill", "1", "-a", app, check=False)
    assert missing.returncode == 1 and "No session 1" in missing.stderr  # never another database's session

    refused = dynod.ctl("pg:reset", "-a", app, "--confirm", "nope", check=False)
    assert refused.returncode == 1
    dynod.ctl("pg:reset", "-a", app, "--confirm", app)
    with _as_app_role(dynod, name) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone()[0] is None

    out = dynod.ctl("redis:cli", "-a", app, "-c", "SET greeting hello", "-c", "GET greeting", "-c", "NOPE").stdout
    assert out.splitlines()[:2] == ["OK", '"hello"'] and "(error)" in out.splitlines()[2]
    assert "Maxmemory:" in dynod.ctl("redis:info", "-a", app).stdout
    assert "PG Version:" in dynod.ctl("pg:info", "-a", app).stdout


def test_credentials_rotation_leaves_the_app_working_on_the_new_ones(dynod: Dynod, db_app: str) -> None:
    old = dynod.client().request("GET", f"/apps/{db_app}/config-vars")["DATABASE_URL"]
    before = dynod.client().request("GET", f"/apps/{db_app}/releases")[-1]["version"]
    out = dynod.ctl("pg:credentials:rotate", "-a", db_app, "--confirm", db_app).stdout
    assert f"{db_app} v{before + 1}" in out
    new = dynod.client().request("GET", f"/apps/{db_app}/config-vars")["DATABASE_URL"]
    assert new != old and new.split("@")[1] == old.split("@")[1]  # same server, new password
    dynod.wait_for(lambda: all(d["release"]["version"] == before + 1 and d["state"] == "up"
                               for d in dynod.dynos(db_app) if d["type"] in ("web", "worker"))
                   and len(dynod.dynos(db_app)) >= 2, timeout=60, what="dynos restarted on the new release")
    assert wait_get(dynod, db_app, "/write?rotated", "ok") == "ok"
    assert "rotated" in json.loads(get(dynod, db_app, "/read"))
    probe = ("import psycopg, sys\ntry:\n    psycopg.connect(sys.argv[1]).close(); print('ACCEPTED')\n"
             "except psycopg.OperationalError as e:\n    print('REJECTED', e)\n")
    out = dynod.ctl("run", "-a", db_app, "--", "python", "-c", probe, old, timeout=60).stdout
    assert "REJECTED" in out and "password authentication failed" in out, out


def test_a_database_past_its_plans_storage_fails_the_write_clearly_and_keeps_every_committed_row(
        dynod: Dynod, apps: list[str]) -> None:
    """essential-0's 1 GB is a file system of 1 GB: filling it fails the next write with
    PostgreSQL's own error; what was committed stays, the server keeps serving, and space freed
    is space usable again."""
    import psycopg

    app = new_app(dynod)
    apps.append(app)
    dynod.ctl("addons:create", "heroku-postgresql:essential-0", "-a", app, "--name", f"postgresql-{app}")
    name = f"postgresql-{app}"
    with _as_app_role(dynod, name) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept SELECT 'row-' || g FROM generate_series(1, 100) g")
        conn.execute("CREATE TABLE big (v text)")
        conn.execute("ALTER TABLE big ALTER COLUMN v SET STORAGE EXTERNAL")  # no compression: 1 MB is 1 MB
        committed, error = 0, ""
        for _ in range(2000):
            try:
                conn.execute("INSERT INTO big SELECT repeat('x', 1048576)")
                committed += 1
            except psycopg.Error as exc:
                error = str(exc)
                break
    assert "No space left on device" in error, error
    assert 700 < committed < 1024, committed
    with _as_app_role(dynod, name) as conn:
        assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == committed
        assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 100
        conn.execute("DROP TABLE big")
        conn.execute("INSERT INTO kept VALUES ('after the disk was full')")
        assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 101
    assert "Available" in dynod.ctl("pg:info", "-a", app).stdout


def test_a_scheduled_backup_runs_and_one_that_fails_says_so(dynod: Dynod, apps: list[str]) -> None:
    """Scheduled for the next minute, twice over: the first run is made to fail (its temporary
    dump file is made immutable, so even root's pg_dump cannot write it), the next one runs."""
    import datetime

    app = new_app(dynod)
    apps.append(app)
    dynod.ctl("addons:create", "heroku-postgresql", "-a", app, "--name", f"postgresql-{app}")
    directory = state(dynod) / "backups" / f"postgresql-{app}"
    directory.mkdir(parents=True, exist_ok=True)
    blocker = directory / ".a001.dump.tmp"
    blocker.touch()
    subprocess.run(["chattr", "+i", str(blocker)], check=True)
    try:
        soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
        dynod.ctl("pg:backups:schedule", "-a", app, "--at", soon.strftime("%H:%M UTC"))
        dynod.wait_for(lambda: "scheduled backup of" in dynod.logs(app), timeout=150, interval=1,
                       what="the scheduled backup's run")
        assert f"Error: scheduled backup of postgresql-{app} failed" in dynod.logs(app)
        listing = dynod.ctl("pg:backups", "-a", app).stdout
        assert "a001" in listing and "Failed" in listing, listing
    finally:
        subprocess.run(["chattr", "-i", str(blocker)], check=False)
    blocker.unlink(missing_ok=True)
    # The next run works: a002 completed (a second schedule, for the minute after).
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
    dynod.ctl("pg:backups:schedule", "-a", app, "--at", soon.strftime("%H:%M UTC"))
    dynod.wait_for(lambda: "Scheduled backup a002" in dynod.logs(app), timeout=150, interval=1,
                   what="the second scheduled backup")
    assert "Completed" in dynod.ctl("pg:backups", "-a", app).stdout


def test_destroying_an_addon_another_app_holds_needs_force_then_detaches_it_there(
        dynod: Dynod, apps: list[str]) -> None:
    owner, other = new_app(dynod), new_app(dynod)
    apps += [owner, other]
    dynod.ctl("addons:create", "heroku-redis", "-a", owner, "--name", f"redis-{owner}")
    dynod.ctl("addons:attach", f"redis-{owner}", "-a", other, "--as", "SHARED_CACHE")
    before = dynod.client().request("GET", f"/apps/{other}/releases")
    refused = dynod.ctl("addons:destroy", f"redis-{owner}", "-a", owner, "--confirm", f"redis-{owner}", check=False)
    assert refused.returncode == 1 and f"still attached to {other}" in refused.stderr and "--force" in refused.stderr
    assert dynod.client().request("GET", f"/apps/{other}/releases") == before
    assert addon_processes(f"redis-{owner}")
    out = dynod.ctl("addons:destroy", f"redis-{owner}", "-a", owner, "--confirm", f"redis-{owner}", "--force").stdout
    assert f"of {other}" in out and f"of {owner}" in out
    last = dynod.client().request("GET", f"/apps/{other}/releases")[-1]
    assert last["description"] == f"Detach SHARED_CACHE (redis-{owner})" and last["addons"] == []
    assert "SHARED_CACHE_URL" not in dynod.client().request("GET", f"/apps/{other}/config-vars")
    assert not addon_processes(f"redis-{owner}")


def test_pg_psql_runs_in_a_one_off_dyno_or_says_the_stack_lacks_psql(dynod: Dynod, db_app: str) -> None:
    result = dynod.ctl("pg:psql", "-a", db_app, "-c", "SELECT 40 + 2 AS answer", check=False, timeout=60)
    if result.returncode == 127:  # the run stack has no psql client (docs/addons.md)
        assert "psql is not in this app's stack" in result.stderr, result.stderr
    else:
        assert result.returncode == 0 and "42" in result.stdout and "(1 row)" in result.stdout, result


def test_a_server_the_ledger_forgot_is_stopped_and_removed_at_start(tmp_path: Path) -> None:
    """As after a dynod killed between a destroy's ledger write and the server's removal."""
    import sqlite3

    from .conftest import running_dynod

    with running_dynod() as d:
        app = new_app(d)
        d.ctl("addons:create", "heroku-redis", "-a", app, "--name", f"redis-{app}")
        assert addon_processes(f"redis-{app}")
        d.kill9()
        db = sqlite3.connect(state(d) / "dynod.sqlite3")
        with db:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("DELETE FROM addons WHERE name = ?", (f"redis-{app}",))
        db.close()
        d.start()
        d.wait_for(lambda: not addon_processes(f"redis-{app}"), what="the forgotten server stopped")
        assert not (state(d) / "addons" / f"redis-{app}").exists() and not addon_cgroups(d, f"redis-{app}")
