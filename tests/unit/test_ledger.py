"""The ledger test suite, run against each backend (SQLite and a private PostgreSQL): every
Protocol method, the schema's own append-only rules, concurrent writers, processes killed mid-way."""

# The backend fixtures are imported by name; pytest passes them in as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from dynod.errors import Conflict, NotFound, UserError
from dynod.ledger import Ledger, open_ledger
from dynod.ledger.rules import MAX_QUANTITY
from dynod.ledger.sqlite import SCHEMA_VERSION, SqliteLedger
from dynod.model import DynoRecord, DynoState
from tests.ledger_backends import Backend, backend, ledger, pg_server  # noqa: F401 - fixtures


def release(ledger, app: str = "shop", *, config: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
            types: dict[str, str] | None = None, status: str = "succeeded", slug: str | None = "a" * 64):
    return ledger.create_release(app, slug_id=slug, config=config or {},
                                 process_types={"web": "serve"} if types is None else types,
                                 description="Deploy", status=status)


def dyno(app: str = "shop", name: str = "web.1", *, id: str | None = None, state: DynoState = DynoState.UP,
         release: int = 1) -> DynoRecord:
    type_name = name.split(".")[0]
    return DynoRecord(id=id or f"{app}.{name}.x", app=app, name=name, type=type_name, release=release,
                      size="standard-1X", command="serve", state=state, pid=123, ip="198.18.0.5", port=5000,
                      created_at=10.0, state_changed_at=10.0)


# ---- opening and schema ------------------------------------------------------------------------

def test_open_creates_parent_directory_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dynod.sqlite3"
    led = open_ledger(str(path))
    try:
        assert isinstance(led, SqliteLedger) and path.exists()
        assert led.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert led.connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert led.schema_version() == SCHEMA_VERSION
    finally:
        led.close()
    for url in (f"sqlite://{path}", f"sqlite:///{path}"):
        led = open_ledger(url)
        assert isinstance(led, SqliteLedger) and led.path == str(path)
        led.close()


@pytest.mark.parametrize("url, message", [
    ("mysql://root:hunter2@x/y", r"^\[ledger\] url 'mysql://root:\*\*\*@x/y': unknown scheme 'mysql'"),
    ("sqlite://relative/path", "give an absolute path"),
    ("relative/dynod.sqlite3", "give an absolute path"),
    ("host=/run/postgresql dbname=dynod", "give an absolute path"),
    ("", "is not a URL"),
    (5, "is not a URL"),
])
def test_a_bad_ledger_url_is_one_clear_line(url: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        open_ledger(url)


def test_an_unreachable_postgresql_is_one_clear_line(tmp_path: Path) -> None:
    url = f"postgresql://dynod@/ledger?host={tmp_path}&port=1"  # no server has this socket
    with pytest.raises(UserError, match=r"^Cannot reach the ledger at postgresql://.*check \[ledger\] url") as info:
        open_ledger(url)
    assert info.value.status == 503


def test_a_password_is_not_shown_in_messages() -> None:
    from dynod.ledger import redacted

    assert redacted("postgresql://dynod:s3cret@db.example:5432/ledger") == \
        "postgresql://dynod:***@db.example:5432/ledger"
    assert redacted("postgresql://dynod@db/ledger?sslmode=require&password=s3cret") == \
        "postgresql://dynod@db/ledger?sslmode=require&password=***"
    assert redacted("postgresql://dynod@/ledger?host=/run/pg") == "postgresql://dynod@/ledger?host=/run/pg"


def test_reopening_keeps_data_and_does_not_rerun_migrations(backend: Backend) -> None:
    first = backend.open()
    first.create_app("shop")
    first.close()
    second = backend.open()
    try:
        assert [a.name for a in second.list_apps()] == ["shop"]
        assert second.schema_version() == SCHEMA_VERSION
    finally:
        second.close()


def test_both_backends_have_the_same_schema_versions() -> None:
    from dynod.ledger import postgres, sqlite

    assert len(postgres.MIGRATIONS) == len(sqlite.MIGRATIONS) == SCHEMA_VERSION == 6


def test_a_newer_schema_is_refused_with_advice(backend: Backend) -> None:
    led = backend.open()
    backend.sql(led, "UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    led.close()
    with pytest.raises(UserError, match="upgrade dynod"):
        backend.open()


def test_a_file_that_is_not_a_database_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "dynod.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a usable SQLite database"):
        SqliteLedger(path)


# ---- apps ----------------------------------------------------------------------------------------

def test_apps_lifecycle(ledger: Ledger) -> None:
    created = ledger.create_app("shop")
    assert created.name == "shop" and not created.maintenance
    ledger.create_app("api-2")
    assert ledger.get_app("shop") == created
    assert [a.name for a in ledger.list_apps()] == ["api-2", "shop"]
    assert ledger.set_maintenance("shop", True).maintenance is True
    assert ledger.get_app("shop").maintenance is True
    ledger.destroy_app("shop")
    with pytest.raises(NotFound, match=r"^Couldn't find that app: shop\.$"):
        ledger.get_app("shop")
    assert [a.name for a in ledger.list_apps()] == ["api-2"]


def test_taken_name_is_a_conflict(ledger: Ledger) -> None:
    ledger.create_app("shop")
    with pytest.raises(Conflict, match="already taken"):
        ledger.create_app("shop")


def test_invalid_name_is_refused_and_nothing_is_stored(ledger: Ledger) -> None:
    with pytest.raises(UserError, match="Invalid app name"):
        ledger.create_app("Bad_Name")
    assert ledger.list_apps() == []


@pytest.mark.parametrize("call", [
    lambda led: led.destroy_app("nope"),
    lambda led: led.set_maintenance("nope", True),
    lambda led: led.list_releases("nope"),
    lambda led: led.current_release("nope"),
    lambda led: led.get_formation("nope"),
    lambda led: led.list_dynos("nope"),
    lambda led: led.next_run_number("nope"),
    lambda led: release(led, "nope"),
])
def test_methods_on_a_missing_app_say_so(ledger: Ledger, call) -> None:
    with pytest.raises(NotFound, match="Couldn't find that app: nope"):
        call(ledger)


# ---- releases ------------------------------------------------------------------------------------

def test_versions_count_up_and_current_is_newest_succeeded(ledger: Ledger) -> None:
    ledger.create_app("shop")
    assert ledger.current_release("shop") is None
    v1 = release(ledger, config={"A": "1"})
    v2 = release(ledger, config={"A": "2"}, status="pending")
    assert (v1.version, v2.version) == (1, 2)
    assert ledger.current_release("shop") == v1  # pending does not count yet
    assert [r.version for r in ledger.list_releases("shop")] == [1, 2]
    assert ledger.get_release("shop", 2).config == {"A": "2"}
    done = ledger.set_release_status("shop", 2, "succeeded")
    assert done.status == "succeeded"
    assert ledger.current_release("shop") == done
    v3 = release(ledger, status="pending")
    ledger.set_release_status("shop", v3.version, "failed")
    assert ledger.current_release("shop").version == 2


def test_release_fields_round_trip(ledger: Ledger) -> None:
    ledger.create_app("shop")
    made = ledger.create_release("shop", slug_id=None, config={"DATABASE_URL": "postgres://x"},
                                 process_types={"web": "gunicorn app", "worker": "celery"},
                                 description="Set DATABASE_URL config vars")
    got = ledger.get_release("shop", 1)
    assert got == made
    assert got.slug_id is None and got.name == "v1" and got.app == "shop"
    assert got.process_types == {"web": "gunicorn app", "worker": "celery"}


def test_set_release_status_only_moves_pending(ledger: Ledger) -> None:
    ledger.create_app("shop")
    release(ledger)
    assert ledger.set_release_status("shop", 1, "succeeded").status == "succeeded"  # no-op is fine
    with pytest.raises(UserError, match="only a pending release"):
        ledger.set_release_status("shop", 1, "failed")
    with pytest.raises(UserError, match="Invalid release status"):
        ledger.set_release_status("shop", 1, "done")
    with pytest.raises(NotFound, match="v9 of shop"):
        ledger.set_release_status("shop", 9, "failed")
    assert ledger.get_release("shop", 1).status == "succeeded"


@pytest.mark.parametrize("kwargs, message", [
    ({"status": "weird"}, "Invalid release status"),
    ({"config": {"A": 1}}, "Invalid config var"),
    ({"process_types": {"we b": "x"}}, "Invalid process type"),
])
def test_bad_release_input_leaves_no_release(ledger: Ledger, kwargs, message) -> None:
    ledger.create_app("shop")
    args = {"slug_id": None, "config": {}, "process_types": {}, "description": "d", **kwargs}
    with pytest.raises(UserError, match=message):
        ledger.create_release("shop", **args)
    assert ledger.list_releases("shop") == []


def test_destroying_an_app_cascades_releases_formation_and_dynos(backend: Backend, ledger: Ledger) -> None:
    ledger.create_app("shop")
    release(ledger)
    ledger.put_dyno(dyno())
    ledger.destroy_app("shop")
    for table in ("releases", "formation", "dynos"):
        assert backend.count(ledger, table) == 0


# ---- the schema refuses history rewrites, even from raw SQL ---------------------------------------

_REWRITES = [
    "UPDATE releases SET config = '{\"A\":\"evil\"}'",
    "UPDATE releases SET slug_id = 'b'",
    "UPDATE releases SET description = 'rewritten'",
    "UPDATE releases SET version = 7",
    "UPDATE releases SET status = 'failed'",  # succeeded is final
    "DELETE FROM releases",
    "INSERT INTO releases (app_id, version, slug_id, config, process_types, description, status,"
    " created_at) SELECT app_id, 5, NULL, '{}', '{}', 'gap', 'succeeded', 0 FROM releases",
    "INSERT INTO releases (app_id, version, slug_id, config, process_types, description, status,"
    " created_at) SELECT app_id, 1, 'b', '{}', '{}', 'swap', 'succeeded', 0 FROM releases WHERE true"
    " ON CONFLICT (app_id, version) DO UPDATE SET slug_id = excluded.slug_id",
]
_REWRITES_BY_BACKEND = {
    "sqlite": ["INSERT OR REPLACE INTO releases (app_id, version, slug_id, config, process_types, description,"
               " status, created_at) SELECT app_id, 1, 'b', '{}', '{}', 'swap', 'succeeded', 0 FROM releases"],
    "postgres": ["TRUNCATE releases", "TRUNCATE apps CASCADE"],
}


@pytest.mark.parametrize("statement", _REWRITES)
def test_raw_sql_cannot_rewrite_history(backend: Backend, ledger: Ledger, statement: str) -> None:
    ledger.create_app("shop")
    before = release(ledger, config={"A": "1"})
    with pytest.raises(backend.db_error, match="append-only"):
        backend.sql(ledger, statement)
    assert ledger.list_releases("shop") == [before]


def test_raw_sql_of_the_backends_own_dialect_cannot_rewrite_history(backend: Backend, ledger: Ledger) -> None:
    ledger.create_app("shop")
    before = release(ledger, config={"A": "1"})
    for statement in _REWRITES_BY_BACKEND[backend.name]:
        with pytest.raises(backend.db_error, match="append-only"):
            backend.sql(ledger, statement)
        assert ledger.list_releases("shop") == [before]


def test_raw_sql_may_only_move_a_pending_status_forward(backend: Backend, ledger: Ledger) -> None:
    ledger.create_app("shop")
    release(ledger, status="pending")
    with pytest.raises(backend.db_error, match="append-only"):
        backend.sql(ledger, "UPDATE releases SET status = 'succeeded', description = 'x'")
    backend.sql(ledger, "UPDATE releases SET status = 'succeeded'")
    assert ledger.get_release("shop", 1).status == "succeeded"
    with pytest.raises(backend.db_error, match="append-only"):
        backend.sql(ledger, "UPDATE releases SET status = 'pending'")


def test_raw_sql_checks_json_and_states(backend: Backend, ledger: Ledger) -> None:
    app_id = ledger.create_app("shop").id
    with pytest.raises(backend.db_error):
        backend.sql(ledger, "INSERT INTO releases (app_id, version, config, process_types, description, status,"
                    " created_at) VALUES (?, 1, '[1]', '{}', 'd', 'succeeded', 0)", (app_id,))
    with pytest.raises(backend.db_error):
        backend.sql(ledger, "INSERT INTO releases (app_id, version, config, process_types, description, status,"
                    " created_at) VALUES (?, 1, '{}', 'not json', 'd', 'succeeded', 0)", (app_id,))
    ledger.put_dyno(dyno())
    with pytest.raises(backend.db_error):
        backend.sql(ledger, "UPDATE dynos SET state = 'zombie'")
    assert ledger.list_releases("shop") == []


# ---- formation -----------------------------------------------------------------------------------

def test_formation_before_any_deploy_is_empty(ledger: Ledger) -> None:
    ledger.create_app("shop")
    assert ledger.get_formation("shop") == []
    with pytest.raises(NotFound, match=r"process type \(web\).*deploy first"):
        ledger.set_formation("shop", "web", quantity=1)


def test_first_deploy_with_web_scales_web_to_one_and_others_to_zero(ledger: Ledger) -> None:
    ledger.create_app("shop")
    release(ledger, types={"web": "serve", "worker": "work"})
    assert [(f.type, f.quantity, f.size) for f in ledger.get_formation("shop")] == [
        ("web", 1, "standard-1X"), ("worker", 0, "standard-1X")]


def test_user_choice_survives_later_deploys(ledger: Ledger) -> None:
    ledger.create_app("shop")
    release(ledger)
    ledger.set_formation("shop", "web", quantity=0)
    release(ledger)
    assert ledger.get_formation("shop")[0].quantity == 0


def test_web_default_applies_when_a_pending_release_succeeds(ledger: Ledger) -> None:
    ledger.create_app("shop")
    release(ledger, types={"worker": "work"})
    release(ledger, types={"web": "serve"}, status="pending")
    assert [f.type for f in ledger.get_formation("shop")] == ["worker"]
    ledger.set_release_status("shop", 2, "succeeded")
    assert [(f.type, f.quantity) for f in ledger.get_formation("shop")] == [("web", 1)]


def test_stored_rows_for_types_gone_from_the_procfile_still_show(ledger: Ledger) -> None:
    ledger.create_app("shop")
    release(ledger, types={"web": "serve", "worker": "work"})
    ledger.set_formation("shop", "worker", quantity=2)
    release(ledger, types={"web": "serve"})
    assert [(f.type, f.quantity) for f in ledger.get_formation("shop")] == [("web", 1), ("worker", 2)]
    assert ledger.set_formation("shop", "worker", quantity=0).quantity == 0


def test_set_formation_updates_quantity_and_size_separately(ledger: Ledger) -> None:
    ledger.create_app("shop")
    release(ledger, types={"web": "serve", "worker": "work"})
    assert ledger.set_formation("shop", "worker", quantity=3).size == "standard-1X"
    resized = ledger.set_formation("shop", "worker", size="STANDARD-2x")
    assert (resized.quantity, resized.size) == (3, "standard-2X")
    assert ledger.get_formation("shop")[1] == resized


@pytest.mark.parametrize("kwargs, message", [
    ({"quantity": -1}, "Invalid quantity"),
    ({"quantity": MAX_QUANTITY + 1}, "Invalid quantity"),
    ({"quantity": True}, "Invalid quantity"),
    ({"size": "huge"}, "Unknown dyno size"),
    ({"quantity": 2, "size": "eco"}, "more than 1 eco"),
])
def test_bad_formation_input_changes_nothing(ledger: Ledger, kwargs, message) -> None:
    ledger.create_app("shop")
    release(ledger)
    before = ledger.get_formation("shop")
    with pytest.raises(UserError, match=message):
        ledger.set_formation("shop", "web", **kwargs)
    assert ledger.get_formation("shop") == before


# ---- dynos ---------------------------------------------------------------------------------------

def test_dynos_put_list_state_delete(ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.create_app("blog")
    ledger.put_dyno(dyno(name="web.10"))
    ledger.put_dyno(dyno(name="web.2"))
    ledger.put_dyno(dyno(name="worker.1"))
    ledger.put_dyno(dyno("blog", "web.1"))
    assert [d.name for d in ledger.list_dynos("shop")] == ["web.2", "web.10", "worker.1"]
    assert [(d.app, d.name) for d in ledger.list_dynos()][0] == ("blog", "web.1")

    ledger.set_dyno_state("shop.web.2.x", DynoState.CRASHED, exit_status=137)
    got = next(d for d in ledger.list_dynos("shop") if d.name == "web.2")
    assert (got.state, got.exit_status, got.pid) == (DynoState.CRASHED, 137, 123)  # pid kept
    assert got.state_changed_at > 10.0
    ledger.set_dyno_state("shop.web.2.x", DynoState.STARTING, pid=456)
    got = next(d for d in ledger.list_dynos("shop") if d.name == "web.2")
    assert (got.state, got.pid) == (DynoState.STARTING, 456)

    replaced = dyno(name="web.2", state=DynoState.DOWN, release=2)
    ledger.put_dyno(replaced)  # same id: replaces
    assert next(d for d in ledger.list_dynos("shop") if d.name == "web.2") == replaced

    ledger.delete_dyno("shop.web.2.x")
    assert [d.name for d in ledger.list_dynos("shop")] == ["web.10", "worker.1"]
    ledger.delete_dyno("shop.web.2.x")  # idempotent: the cascade of destroy_app may have been first
    with pytest.raises(NotFound, match="dyno: ghost"):
        ledger.set_dyno_state("ghost", DynoState.UP)


def test_put_dyno_for_a_missing_app_is_refused(ledger: Ledger) -> None:
    with pytest.raises(NotFound, match="app: shop"):
        ledger.put_dyno(dyno())


def test_run_numbers_are_four_digits_and_avoid_names_in_use(backend: Backend) -> None:
    led = backend.open(rng=random.Random(1))
    try:
        led.create_app("shop")
        first = led.next_run_number("shop")
        assert 1000 <= first <= 9999
        led.put_dyno(dyno(name=f"run.{first}"))
        # Same seed again: the random pick would repeat, but the name is taken now.
        again = backend.open(rng=random.Random(1))
        try:
            second = again.next_run_number("shop")
            assert second != first and 1000 <= second <= 9999
        finally:
            again.close()
    finally:
        led.close()


def test_run_numbers_fall_back_when_random_picks_are_taken(backend: Backend, ledger: Ledger) -> None:
    app_id = ledger.create_app("shop").id
    insert = ("INSERT INTO dynos (id, app_id, name, type, release, size, command, state, port, created_at,"
              " state_changed_at) VALUES (?, ?, ?, 'run', 1, 'eco', 'bash', 'up', 5000, 0, 0)")
    backend.sql_many(ledger, insert, [(f"x{n}", app_id, f"run.{n}") for n in range(1000, 10000) if n != 4242])
    assert ledger.next_run_number("shop") == 4242
    backend.sql(ledger, insert, ("last", app_id, "run.4242"))
    with pytest.raises(UserError, match="stop some first"):
        ledger.next_run_number("shop")


# ---- concurrency and crashes -----------------------------------------------------------------------

def test_concurrent_writers_get_distinct_consecutive_versions(backend: Backend) -> None:
    setup = backend.open()
    setup.create_app("shop")
    setup.close()
    writers, per_writer = 4, 15
    errors: list[BaseException] = []
    made: list[int] = []
    barrier = threading.Barrier(writers)

    def deploy() -> None:
        led = backend.open(busy_timeout=30.0)  # a connection of its own, as another process has
        try:
            barrier.wait()
            for _ in range(per_writer):
                made.append(release(led).version)
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)
        finally:
            led.close()

    threads = [threading.Thread(target=deploy) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = list(range(1, writers * per_writer + 1))
    assert sorted(made) == expected  # each writer was told a distinct version
    check = backend.open()
    try:
        assert [r.version for r in check.list_releases("shop")] == expected
    finally:
        check.close()


def test_two_connections_racing_for_a_name_get_one_conflict(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    results: list[str] = []
    barrier = threading.Barrier(2)

    def create(led: Ledger) -> None:
        barrier.wait()
        try:
            led.create_app("shop")
            results.append("created")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=create, args=(led,)) for led in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["conflict", "created"]
    a.close()
    b.close()


def test_rollback_is_a_new_release_with_the_old_slug_and_config(backend: Backend, ledger: Ledger) -> None:
    # How the platform rolls back (Platform.rollback): copy v1 forward; v1 and v2 stay as they were.
    ledger.create_app("shop")
    v1 = release(ledger, config={"A": "1"}, slug="1" * 64)
    v2 = release(ledger, config={"A": "2"}, slug="2" * 64)
    target = ledger.get_release("shop", 1)
    v3 = ledger.create_release("shop", slug_id=target.slug_id, config=dict(target.config),
                               process_types=dict(target.process_types), description="Rollback to v1")
    assert (v3.version, v3.slug_id, v3.config) == (3, "1" * 64, {"A": "1"})
    assert ledger.current_release("shop") == v3
    assert ledger.list_releases("shop")[:2] == [v1, v2]


def test_a_writer_holding_the_lock_makes_others_wait_then_fail_cleanly(backend: Backend) -> None:
    holder = backend.open()
    holder.create_app("shop")
    other = backend.open(busy_timeout=0.2)
    raw = holder.connection
    if backend.name == "sqlite":
        raw.execute("BEGIN IMMEDIATE")
    else:
        raw.execute("BEGIN")
        raw.execute("LOCK TABLE apps IN EXCLUSIVE MODE")  # what a stuck writer on another host holds
    try:
        with pytest.raises(UserError, match="busy") as info:
            other.create_app("blog")
        assert info.value.status == 503
        assert [a.name for a in other.list_apps()] == ["shop"]  # readers are not blocked
    finally:
        raw.execute("ROLLBACK")
    other.create_app("blog")
    holder.close()
    other.close()


def test_a_dropped_postgresql_connection_is_made_again(backend: Backend, ledger: Ledger) -> None:
    if backend.name != "postgres":
        pytest.skip("SQLite has no server connection to lose")
    import psycopg

    ledger.create_app("shop")
    pid = ledger.connection.info.backend_pid
    with psycopg.connect(backend.url, autocommit=True) as admin:  # what a server restart does to it
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(200):  # the backend exits a moment after the signal
            if admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None:
                break
            time.sleep(0.01)
    assert [a.name for a in ledger.list_apps()] == ["shop"]  # reconnected, nothing lost
    assert ledger.connection.info.backend_pid != pid
    assert release(ledger).version == 1


def _die_inside(backend: Backend, method: str, work) -> int:  # type: ignore[no-untyped-def]
    """Fork; in the child, SIGKILL the process from inside ``method`` while ``work`` runs (so in
    the middle of its transaction). Returns the signal the child died of."""
    pid = os.fork()
    if pid == 0:  # child: never returns to pytest
        try:
            led = backend.open()
            setattr(led, method, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
            work(led)
        finally:
            os._exit(1)  # reaching here means the crash point was never hit
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.waitstatus_to_exitcode(status)


def test_a_process_killed_mid_release_leaves_no_half_release(backend: Backend) -> None:
    led = backend.open()
    led.create_app("shop")
    release(led, types={"worker": "work"})
    led.close()
    # _default_web_formation runs after the release row is inserted, inside the same transaction.
    assert _die_inside(backend, "_default_web_formation", lambda child: release(child)) == signal.SIGKILL
    after = backend.open(busy_timeout=10.0)
    try:
        assert [r.version for r in after.list_releases("shop")] == [1]
        assert [f.type for f in after.get_formation("shop")] == ["worker"]
        assert release(after).version == 2  # the lock went with the dead process
        assert [(f.type, f.quantity) for f in after.get_formation("shop")] == [("web", 1)]
    finally:
        after.close()


def test_a_process_killed_mid_uid_choice_leaves_the_uid_free(backend: Backend) -> None:
    led = backend.open()
    led.create_app("shop")
    led.close()
    assert _die_inside(backend, "_lock_uids", lambda child: child.app_uid("shop", 70000, 5)) == signal.SIGKILL
    after = backend.open(busy_timeout=10.0)
    try:
        assert after.app_uid("shop", 70000, 5) == 70000
    finally:
        after.close()


def test_a_process_killed_after_commit_keeps_the_commit(backend: Backend) -> None:
    backend.open().close()
    pid = os.fork()
    if pid == 0:
        try:
            led = backend.open()
            led.create_app("shop")
            release(led)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint: the commit must stand
    os.waitpid(pid, 0)
    after = backend.open()
    try:
        assert [r.version for r in after.list_releases("shop")] == [1]
    finally:
        after.close()


# ---- domains and certificates -------------------------------------------------------------------------

def test_domains_belong_to_one_app(ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.create_app("blog")
    ledger.add_domain("shop", "www.example.com")
    ledger.add_domain("shop", "*.shop.example.com")
    assert ledger.list_domains("shop") == ["*.shop.example.com", "www.example.com"]
    with pytest.raises(Conflict, match="in use by another app"):
        ledger.add_domain("blog", "www.example.com")
    with pytest.raises(Conflict, match="in use by this app"):
        ledger.add_domain("shop", "www.example.com")
    ledger.remove_domain("shop", "www.example.com")
    ledger.add_domain("blog", "www.example.com")
    assert ledger.list_domains("blog") == ["www.example.com"]
    with pytest.raises(NotFound, match="domain: www.example.com on shop"):
        ledger.remove_domain("shop", "www.example.com")


@pytest.mark.parametrize("hostname", ["", "Example.com", "localhost", "a..b", "-a.com", "a_b.com",
                                      "*.*.a.com", "a.com.", "x" * 64 + ".com"])
def test_invalid_domains_are_refused(ledger: Ledger, hostname: str) -> None:
    ledger.create_app("shop")
    with pytest.raises(UserError, match="Invalid domain"):
        ledger.add_domain("shop", hostname)
    assert ledger.list_domains("shop") == []


def test_certs_are_stored_renewed_and_go_with_their_domain(backend: Backend, ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.add_domain("shop", "www.example.com")
    ledger.add_cert("shop", "www.example.com", "CERT1", "KEY1")
    ledger.add_cert("shop", "shop.localhost", "CERT0", "KEY0")  # the default hostname
    ledger.add_cert("shop", "www.example.com", "CERT2", "KEY2")  # renewal replaces
    assert ledger.list_certs("shop") == [("shop.localhost", "CERT0", "KEY0"),
                                         ("www.example.com", "CERT2", "KEY2")]
    ledger.remove_domain("shop", "www.example.com")
    assert ledger.list_certs("shop") == [("shop.localhost", "CERT0", "KEY0")]
    ledger.destroy_app("shop")
    assert backend.count(ledger, "certs") == 0


def test_a_v1_ledger_is_migrated_in_place(backend: Backend) -> None:
    backend.build_old_schema(1)
    led = backend.open()
    try:
        assert led.schema_version() == SCHEMA_VERSION
        assert [a.name for a in led.list_apps()] == ["shop"]
        led.add_domain("shop", "www.example.com")
        assert led.app_uid("shop", 70000, 10) == 70000
    finally:
        led.close()


def test_routing_policy_is_random_until_set_and_checked(ledger: Ledger) -> None:
    ledger.create_app("myapp")
    assert ledger.get_app("myapp").routing_policy == "random"
    assert ledger.set_routing_policy("myapp", "p2c").routing_policy == "p2c"
    with pytest.raises(UserError, match="random.*p2c"):
        ledger.set_routing_policy("myapp", "round-robin")
    assert ledger.get_app("myapp").routing_policy == "p2c"


def test_the_ledger_url_setting_defaults_to_the_sqlite_file_in_the_state_dir(tmp_path: Path) -> None:
    from dynod.settings import load_settings

    config = tmp_path / "dynod.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    assert load_settings(config).ledger_url == str(tmp_path / "state" / "dynod.sqlite3")
    config.write_text('[ledger]\nurl = "postgresql://dynod@db.example/dynod"\n')
    assert load_settings(config).ledger_url == "postgresql://dynod@db.example/dynod"
    config.write_text('[ledger]\npath = "/x"\n')
    with pytest.raises(UserError, match=r"\[ledger\]: unknown setting 'path'; known: url"):
        load_settings(config)
