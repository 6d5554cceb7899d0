"""SqliteLedger: every Protocol method, the schema's own append-only rules, concurrency, crashes."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from dynod.errors import Conflict, NotFound, UserError
from dynod.ledger import open_ledger
from dynod.ledger.sqlite import MAX_QUANTITY, SCHEMA_VERSION, SqliteLedger
from dynod.model import DynoRecord, DynoState


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "dynod.sqlite3"


@pytest.fixture
def ledger(path: Path):
    led = SqliteLedger(path, clock=FakeClock(), rng=random.Random(7))
    yield led
    led.close()


def release(ledger: SqliteLedger, app: str = "shop", *, config: dict[str, str] | None = None,
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

def test_open_creates_parent_directory_wal_and_schema_version(path: Path) -> None:
    led = open_ledger(str(path))
    try:
        assert path.exists()
        assert led.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert led.connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert led.schema_version() == SCHEMA_VERSION
    finally:
        led.close()


def test_reopening_keeps_data_and_does_not_rerun_migrations(path: Path) -> None:
    first = SqliteLedger(path)
    first.create_app("shop")
    first.close()
    second = SqliteLedger(path)
    try:
        assert [a.name for a in second.list_apps()] == ["shop"]
        assert second.schema_version() == SCHEMA_VERSION
    finally:
        second.close()


def test_a_newer_schema_is_refused_with_advice(path: Path) -> None:
    led = SqliteLedger(path)
    led.connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    led.close()
    with pytest.raises(UserError, match="upgrade dynod"):
        SqliteLedger(path)


def test_a_file_that_is_not_a_database_is_a_user_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a usable SQLite database"):
        SqliteLedger(path)


# ---- apps ----------------------------------------------------------------------------------------

def test_apps_lifecycle(ledger: SqliteLedger) -> None:
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


def test_taken_name_is_a_conflict(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    with pytest.raises(Conflict, match="already taken"):
        ledger.create_app("shop")


def test_invalid_name_is_refused_and_nothing_is_stored(ledger: SqliteLedger) -> None:
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
def test_methods_on_a_missing_app_say_so(ledger: SqliteLedger, call) -> None:
    with pytest.raises(NotFound, match="Couldn't find that app: nope"):
        call(ledger)


# ---- releases ------------------------------------------------------------------------------------

def test_versions_count_up_and_current_is_newest_succeeded(ledger: SqliteLedger) -> None:
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


def test_release_fields_round_trip(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    made = ledger.create_release("shop", slug_id=None, config={"DATABASE_URL": "postgres://x"},
                                 process_types={"web": "gunicorn app", "worker": "celery"},
                                 description="Set DATABASE_URL config vars")
    got = ledger.get_release("shop", 1)
    assert got == made
    assert got.slug_id is None and got.name == "v1" and got.app == "shop"
    assert got.process_types == {"web": "gunicorn app", "worker": "celery"}


def test_set_release_status_only_moves_pending(ledger: SqliteLedger) -> None:
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
def test_bad_release_input_leaves_no_release(ledger: SqliteLedger, kwargs, message) -> None:
    ledger.create_app("shop")
    args = {"slug_id": None, "config": {}, "process_types": {}, "description": "d", **kwargs}
    with pytest.raises(UserError, match=message):
        ledger.create_release("shop", **args)
    assert ledger.list_releases("shop") == []


def test_destroying_an_app_cascades_releases_formation_and_dynos(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    release(ledger)
    ledger.put_dyno(dyno())
    ledger.destroy_app("shop")
    db = ledger.connection
    for table in ("releases", "formation", "dynos"):
        assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


# ---- the schema refuses history rewrites, even from raw SQL ---------------------------------------

@pytest.mark.parametrize("statement", [
    "UPDATE releases SET config = '{\"A\":\"evil\"}'",
    "UPDATE releases SET slug_id = 'b'",
    "UPDATE releases SET description = 'rewritten'",
    "UPDATE releases SET version = 7",
    "UPDATE releases SET status = 'failed'",  # succeeded is final
    "DELETE FROM releases",
    "INSERT OR REPLACE INTO releases (app_id, version, slug_id, config, process_types, description,"
    " status, created_at) SELECT app_id, 1, 'b', '{}', '{}', 'swap', 'succeeded', 0 FROM releases",
    "INSERT INTO releases (app_id, version, slug_id, config, process_types, description, status,"
    " created_at) SELECT app_id, 5, NULL, '{}', '{}', 'gap', 'succeeded', 0 FROM releases",
])
def test_raw_sql_cannot_rewrite_history(ledger: SqliteLedger, statement: str) -> None:
    ledger.create_app("shop")
    before = release(ledger, config={"A": "1"})
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ledger.connection.execute(statement)
    assert ledger.list_releases("shop") == [before]


def test_raw_sql_may_only_move_a_pending_status_forward(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    release(ledger, status="pending")
    db = ledger.connection
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE releases SET status = 'succeeded', description = 'x'")
    db.execute("UPDATE releases SET status = 'succeeded'")
    assert ledger.get_release("shop", 1).status == "succeeded"
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE releases SET status = 'pending'")


def test_raw_sql_checks_json_and_states(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    db = ledger.connection
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO releases (app_id, version, config, process_types, description, status,"
                   " created_at) VALUES (1, 1, '[1]', '{}', 'd', 'succeeded', 0)")
    ledger.put_dyno(dyno())
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE dynos SET state = 'zombie'")


# ---- formation -----------------------------------------------------------------------------------

def test_formation_before_any_deploy_is_empty(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    assert ledger.get_formation("shop") == []
    with pytest.raises(NotFound, match=r"process type \(web\).*deploy first"):
        ledger.set_formation("shop", "web", quantity=1)


def test_first_deploy_with_web_scales_web_to_one_and_others_to_zero(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    release(ledger, types={"web": "serve", "worker": "work"})
    assert [(f.type, f.quantity, f.size) for f in ledger.get_formation("shop")] == [
        ("web", 1, "standard-1X"), ("worker", 0, "standard-1X")]


def test_user_choice_survives_later_deploys(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    release(ledger)
    ledger.set_formation("shop", "web", quantity=0)
    release(ledger)
    assert ledger.get_formation("shop")[0].quantity == 0


def test_web_default_applies_when_a_pending_release_succeeds(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    release(ledger, types={"worker": "work"})
    release(ledger, types={"web": "serve"}, status="pending")
    assert [f.type for f in ledger.get_formation("shop")] == ["worker"]
    ledger.set_release_status("shop", 2, "succeeded")
    assert [(f.type, f.quantity) for f in ledger.get_formation("shop")] == [("web", 1)]


def test_stored_rows_for_types_gone_from_the_procfile_still_show(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    release(ledger, types={"web": "serve", "worker": "work"})
    ledger.set_formation("shop", "worker", quantity=2)
    release(ledger, types={"web": "serve"})
    assert [(f.type, f.quantity) for f in ledger.get_formation("shop")] == [("web", 1), ("worker", 2)]
    assert ledger.set_formation("shop", "worker", quantity=0).quantity == 0


def test_set_formation_updates_quantity_and_size_separately(ledger: SqliteLedger) -> None:
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
def test_bad_formation_input_changes_nothing(ledger: SqliteLedger, kwargs, message) -> None:
    ledger.create_app("shop")
    release(ledger)
    before = ledger.get_formation("shop")
    with pytest.raises(UserError, match=message):
        ledger.set_formation("shop", "web", **kwargs)
    assert ledger.get_formation("shop") == before


# ---- dynos ---------------------------------------------------------------------------------------

def test_dynos_put_list_state_delete(ledger: SqliteLedger) -> None:
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


def test_put_dyno_for_a_missing_app_is_refused(ledger: SqliteLedger) -> None:
    with pytest.raises(NotFound, match="app: shop"):
        ledger.put_dyno(dyno())


def test_run_numbers_are_four_digits_and_avoid_names_in_use(path: Path) -> None:
    led = SqliteLedger(path, rng=random.Random(1))
    try:
        led.create_app("shop")
        first = led.next_run_number("shop")
        assert 1000 <= first <= 9999
        led.put_dyno(dyno(name=f"run.{first}"))
        # Same seed again: the random pick would repeat, but the name is taken now.
        again = SqliteLedger(path, rng=random.Random(1))
        try:
            second = again.next_run_number("shop")
            assert second != first and 1000 <= second <= 9999
        finally:
            again.close()
    finally:
        led.close()


def test_run_numbers_fall_back_when_random_picks_are_taken(ledger: SqliteLedger) -> None:
    ledger.create_app("shop")
    db = ledger.connection
    insert = ("INSERT INTO dynos (id, app_id, name, type, release, size, command, state, port, created_at,"
              " state_changed_at) VALUES (?, 1, ?, 'run', 1, 'eco', 'bash', 'up', 5000, 0, 0)")
    db.execute("BEGIN")
    db.executemany(insert, [(f"x{n}", f"run.{n}") for n in range(1000, 10000) if n != 4242])
    db.execute("COMMIT")
    assert ledger.next_run_number("shop") == 4242
    db.execute(insert, ("last", "run.4242"))
    with pytest.raises(UserError, match="stop some first"):
        ledger.next_run_number("shop")


# ---- concurrency and crashes -----------------------------------------------------------------------

def test_two_connections_never_allocate_the_same_version(path: Path) -> None:
    SqliteLedger(path).create_app("shop")
    per_thread = 25
    errors: list[BaseException] = []

    def deploy() -> None:
        led = SqliteLedger(path, busy_timeout=30.0)
        try:
            for _ in range(per_thread):
                release(led)
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)
        finally:
            led.close()

    threads = [threading.Thread(target=deploy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check = SqliteLedger(path)
    try:
        assert [r.version for r in check.list_releases("shop")] == list(range(1, 2 * per_thread + 1))
    finally:
        check.close()


def test_two_connections_racing_for_a_name_get_one_conflict(path: Path) -> None:
    a, b = SqliteLedger(path), SqliteLedger(path)
    results: list[str] = []
    barrier = threading.Barrier(2)

    def create(led: SqliteLedger) -> None:
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


def test_a_writer_holding_the_lock_makes_others_wait_then_fail_cleanly(path: Path) -> None:
    holder = SqliteLedger(path)
    holder.create_app("shop")
    other = SqliteLedger(path, busy_timeout=0.2)
    holder.connection.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(UserError, match="busy") as info:
            other.create_app("blog")
        assert info.value.status == 503
        assert [a.name for a in other.list_apps()] == ["shop"]  # WAL: readers are not blocked
    finally:
        holder.connection.execute("ROLLBACK")
    other.create_app("blog")
    holder.close()
    other.close()


def _die_inside(path: Path, method: str, work) -> int:
    """Fork; in the child, make ``method`` kill the process mid-transaction while ``work`` runs."""
    pid = os.fork()
    if pid == 0:  # child: never returns to pytest
        try:
            led = SqliteLedger(path)
            setattr(led, method, lambda *a, **k: os._exit(0))
            work(led)
        finally:
            os._exit(1)  # reaching here means the crash point was never hit
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_process_killed_mid_release_leaves_no_half_release(path: Path) -> None:
    led = SqliteLedger(path)
    led.create_app("shop")
    release(led, types={"worker": "work"})
    led.close()
    # _default_web_formation runs after the release row is inserted, inside the same transaction.
    code = _die_inside(path, "_default_web_formation", lambda child: release(child))
    assert code == 0
    after = SqliteLedger(path)
    try:
        assert [r.version for r in after.list_releases("shop")] == [1]
        assert [f.type for f in after.get_formation("shop")] == ["worker"]
        assert release(after).version == 2  # the lock was released with the dead process
        assert [(f.type, f.quantity) for f in after.get_formation("shop")] == [("web", 1)]
    finally:
        after.close()


def test_a_process_killed_after_commit_keeps_the_commit(path: Path) -> None:
    SqliteLedger(path).close()
    pid = os.fork()
    if pid == 0:
        try:
            led = SqliteLedger(path)
            led.create_app("shop")
            release(led)
        finally:
            os._exit(0)  # no close(), no checkpoint: the WAL alone must carry the commit
    os.waitpid(pid, 0)
    after = SqliteLedger(path)
    try:
        assert [r.version for r in after.list_releases("shop")] == [1]
    finally:
        after.close()


# ---- domains and certificates -------------------------------------------------------------------------

def test_domains_belong_to_one_app(ledger: SqliteLedger) -> None:
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
def test_invalid_domains_are_refused(ledger: SqliteLedger, hostname: str) -> None:
    ledger.create_app("shop")
    with pytest.raises(UserError, match="Invalid domain"):
        ledger.add_domain("shop", hostname)
    assert ledger.list_domains("shop") == []


def test_certs_are_stored_renewed_and_go_with_their_domain(ledger: SqliteLedger) -> None:
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
    assert ledger.connection.execute("SELECT COUNT(*) FROM certs").fetchone()[0] == 0


def test_a_v1_ledger_is_migrated_in_place(path: Path) -> None:
    from dynod.ledger import sqlite as module

    old = module.MIGRATIONS[:1]
    path.parent.mkdir(parents=True)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    raw.execute("INSERT INTO schema_version VALUES (1)")
    for statement in module._statements(old[0]):
        raw.execute(statement)
    raw.execute("INSERT INTO apps (name, created_at) VALUES ('shop', 0)")
    raw.close()
    led = SqliteLedger(path)
    try:
        assert led.schema_version() == SCHEMA_VERSION == 4
        assert [a.name for a in led.list_apps()] == ["shop"]
        led.add_domain("shop", "www.example.com")
    finally:
        led.close()


def test_routing_policy_is_random_until_set_and_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dynod.errors import UserError
    from dynod.ledger.sqlite import SqliteLedger

    led = SqliteLedger(tmp_path / "l.sqlite3")
    led.create_app("myapp")
    assert led.get_app("myapp").routing_policy == "random"
    assert led.set_routing_policy("myapp", "p2c").routing_policy == "p2c"
    try:
        led.set_routing_policy("myapp", "round-robin")
    except UserError as exc:
        assert "random" in str(exc) and "p2c" in str(exc)
    else:
        raise AssertionError("an unknown policy was accepted")
    assert led.get_app("myapp").routing_policy == "p2c"
    led.close()
