"""Schema v6 against each backend: the app's buildpack list (Heroku's buildpack installations)
and each dyno's recorded cgroup, including a v5 ledger migrated in place."""

# The backend fixtures are imported by name; pytest passes them in as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import threading

import pytest

from dynod.errors import NotFound, UserError
from dynod.ledger import Ledger
from dynod.ledger.rules import MAX_BUILDPACK_LENGTH, MAX_BUILDPACKS
from dynod.ledger.sqlite import SCHEMA_VERSION
from dynod.model import DynoRecord, DynoState
from tests.ledger_backends import Backend, backend, ledger, pg_server  # noqa: F401 - fixtures

PYTHON = "heroku/python"
NODE = "https://github.com/heroku/heroku-buildpack-nodejs"


def dyno(app: str = "shop", name: str = "web.1", *, cgroup: str = "") -> DynoRecord:
    return DynoRecord(id=f"{app}.{name}.x", app=app, name=name, type=name.split(".")[0], release=1,
                      size="standard-1X", command="serve", state=DynoState.UP, pid=123, ip="198.18.0.5",
                      port=5000, created_at=10.0, state_changed_at=10.0, cgroup=cgroup)


def test_buildpacks_are_empty_until_set_then_kept_in_order(ledger: Ledger) -> None:
    ledger.create_app("shop")
    assert ledger.get_buildpacks("shop") == []
    ledger.set_buildpacks("shop", [NODE, PYTHON])
    assert ledger.get_buildpacks("shop") == [NODE, PYTHON]
    ledger.set_buildpacks("shop", [PYTHON, NODE])  # reordering is a replacement too
    assert ledger.get_buildpacks("shop") == [PYTHON, NODE]
    ledger.set_buildpacks("shop", [PYTHON])
    assert ledger.get_buildpacks("shop") == [PYTHON]
    ledger.set_buildpacks("shop", [])  # clear: back to detection
    assert ledger.get_buildpacks("shop") == []


def test_buildpacks_are_per_app_and_go_with_the_app(backend: Backend, ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.create_app("blog")
    ledger.set_buildpacks("shop", [PYTHON, NODE])
    ledger.set_buildpacks("blog", [NODE])  # the same URL in another app is fine
    assert ledger.get_buildpacks("blog") == [NODE]
    ledger.destroy_app("shop")
    assert backend.count(ledger, "app_buildpacks") == 1
    ledger.create_app("shop")
    assert ledger.get_buildpacks("shop") == []


def test_setting_buildpacks_is_not_a_release(ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.create_release("shop", slug_id=None, config={}, process_types={}, description="Initial release")
    ledger.set_buildpacks("shop", [PYTHON])
    assert [r.version for r in ledger.list_releases("shop")] == [1]


@pytest.mark.parametrize("urls,message", [
    ("heroku/python", "must be a list"),
    (None, "must be a list"),
    ([PYTHON, PYTHON], "given twice"),
    ([""], "Invalid buildpack"),
    (["heroku/python extra"], "Invalid buildpack"),
    (["heroku/python\n"], "Invalid buildpack"),
    (["heroku/\x00python"], "Invalid buildpack"),
    ([7], "Invalid buildpack"),
    (["x" * (MAX_BUILDPACK_LENGTH + 1)], "Invalid buildpack"),
    ([f"heroku/b{i}" for i in range(MAX_BUILDPACKS + 1)], "Too many buildpacks"),
])
def test_a_bad_list_is_one_clear_error_and_changes_nothing(backend: Backend, ledger: Ledger, urls: object,
                                                           message: str) -> None:
    ledger.create_app("shop")
    ledger.set_buildpacks("shop", [NODE])
    with pytest.raises(UserError, match=message):
        ledger.set_buildpacks("shop", urls)  # type: ignore[arg-type]
    assert ledger.get_buildpacks("shop") == [NODE]
    assert backend.count(ledger, "app_buildpacks") == 1


def test_the_longest_allowed_list_and_url_are_stored(ledger: Ledger) -> None:
    ledger.create_app("shop")
    urls = [f"https://example.com/{i}/" + "x" * (MAX_BUILDPACK_LENGTH - 30) for i in range(MAX_BUILDPACKS)]
    ledger.set_buildpacks("shop", urls)
    assert ledger.get_buildpacks("shop") == urls


def test_buildpacks_of_a_missing_app_are_not_found(ledger: Ledger) -> None:
    with pytest.raises(NotFound):
        ledger.get_buildpacks("ghost")
    with pytest.raises(NotFound):
        ledger.set_buildpacks("ghost", [PYTHON])


def test_the_schema_refuses_a_duplicate_or_empty_buildpack_even_from_raw_sql(backend: Backend,
                                                                            ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.set_buildpacks("shop", [PYTHON])
    app_id = ledger.get_app("shop").id
    for statement, params in [
        ("INSERT INTO app_buildpacks (app_id, position, url) VALUES (?, 1, ?)", (app_id, PYTHON)),
        ("INSERT INTO app_buildpacks (app_id, position, url) VALUES (?, 0, ?)", (app_id, NODE)),
        ("INSERT INTO app_buildpacks (app_id, position, url) VALUES (?, 2, '')", (app_id,)),
        ("INSERT INTO app_buildpacks (app_id, position, url) VALUES (?, -1, ?)", (app_id, NODE)),
    ]:
        with pytest.raises(backend.db_error):
            backend.sql(ledger, statement, params)
        if backend.name == "postgres":
            ledger.connection.rollback()
    assert ledger.get_buildpacks("shop") == [PYTHON]


def test_concurrent_replacements_leave_one_whole_list(backend: Backend) -> None:
    # Each writer replaces the list whole; whoever commits last wins, and no list is ever a mix.
    lists = [[f"heroku/w{i}-{j}" for j in range(5)] for i in range(6)]
    setup = backend.open()
    setup.create_app("shop")
    setup.close()
    errors: list[BaseException] = []

    def replace(urls: list[str]) -> None:
        led = backend.open()
        try:
            for _ in range(5):
                led.set_buildpacks("shop", urls)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            led.close()

    threads = [threading.Thread(target=replace, args=(urls,)) for urls in lists]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check = backend.open()
    try:
        assert check.get_buildpacks("shop") in lists
    finally:
        check.close()


def test_a_dyno_keeps_its_cgroup_and_an_update_replaces_it(ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.put_dyno(dyno(cgroup="memory=/sys/fs/cgroup/memory/dynod/shop.web.1.x"))
    assert ledger.list_dynos("shop")[0].cgroup == "memory=/sys/fs/cgroup/memory/dynod/shop.web.1.x"
    ledger.set_dyno_state("shop.web.1.x", DynoState.CRASHED)
    assert ledger.list_dynos()[0].cgroup == "memory=/sys/fs/cgroup/memory/dynod/shop.web.1.x"
    ledger.put_dyno(dyno(cgroup="other"))
    assert [d.cgroup for d in ledger.list_dynos()] == ["other"]
    ledger.put_dyno(dyno(name="web.2"))
    assert [d.cgroup for d in ledger.list_dynos()] == ["other", ""]


def _insert_v5_dyno(backend: Backend) -> None:
    """A dyno row as a v5 dynod wrote it: no cgroup column yet."""
    statement = ("INSERT INTO dynos (id, app_id, name, type, release, size, command, state, pid, ip, port,"
                 " created_at, state_changed_at) SELECT 'shop.web.1.old', id, 'web.1', 'web', 1,"
                 " 'standard-1X', 'serve', 'up', 321, '198.18.0.9', 5000, 1.0, 1.0 FROM apps")
    if backend.name == "sqlite":
        import sqlite3

        raw = sqlite3.connect(backend.path, isolation_level=None)  # type: ignore[attr-defined]
        raw.execute(statement)
        raw.close()
    else:
        import psycopg

        with psycopg.connect(backend.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(statement)


def test_a_v5_ledger_gains_buildpacks_and_dyno_cgroups_in_place(backend: Backend) -> None:
    backend.build_old_schema(5)
    _insert_v5_dyno(backend)
    led = backend.open()
    try:
        assert led.schema_version() == SCHEMA_VERSION == 6
        [old] = led.list_dynos("shop")
        assert (old.id, old.pid, old.cgroup) == ("shop.web.1.old", 321, "")
        led.put_dyno(dyno(cgroup="pids=/sys/fs/cgroup/pids/dynod/shop.web.1.x"))
        assert [d.cgroup for d in led.list_dynos()] == ["", "pids=/sys/fs/cgroup/pids/dynod/shop.web.1.x"]
        assert led.get_buildpacks("shop") == []
        led.set_buildpacks("shop", [PYTHON])
        assert led.get_buildpacks("shop") == [PYTHON]
    finally:
        led.close()


def test_a_v1_ledger_reaches_v6(backend: Backend) -> None:
    backend.build_old_schema(1)
    led = backend.open()
    try:
        assert led.schema_version() == 6
        led.set_buildpacks("shop", [NODE, PYTHON])
        assert led.get_buildpacks("shop") == [NODE, PYTHON]
    finally:
        led.close()
