"""The app's own uid and its features, against each backend: assignment, reuse after destroy,
a full range, racing writers, and the schema's own uniqueness."""

# The backend fixtures are imported by name; pytest passes them in as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import threading

import pytest

from dynod.errors import NotFound, UserError
from dynod.ledger import Ledger
from dynod.ledger.sqlite import SCHEMA_VERSION
from tests.ledger_backends import Backend, backend, ledger, pg_server  # noqa: F401 - fixtures


def test_first_call_assigns_the_lowest_free_uid_and_later_calls_return_it(ledger: Ledger) -> None:
    for name in ("shop", "blog", "wiki"):
        ledger.create_app(name)
    assert ledger.app_uid("shop", 70000, 10) == 70000
    assert ledger.app_uid("blog", 70000, 10) == 70001
    assert ledger.app_uid("shop", 70000, 10) == 70000
    assert ledger.app_uid("wiki", 70000, 10) == 70002


def test_destroying_an_app_releases_its_uid_for_a_new_app(ledger: Ledger) -> None:
    for name in ("shop", "blog"):
        ledger.create_app(name)
        ledger.app_uid(name, 70000, 10)
    ledger.destroy_app("shop")
    ledger.create_app("wiki")
    assert ledger.app_uid("wiki", 70000, 10) == 70000  # the hole left by shop
    ledger.create_app("docs")
    assert ledger.app_uid("docs", 70000, 10) == 70002


def test_a_full_range_is_a_clear_error_and_assigns_nothing(backend: Backend, ledger: Ledger) -> None:
    for name in ("shop", "blog", "wiki"):
        ledger.create_app(name)
    ledger.app_uid("shop", 70000, 2)
    ledger.app_uid("blog", 70000, 2)
    with pytest.raises(UserError, match=r"no free uid in \[70000, 70002\): raise \[dynos\] uid_count"):
        ledger.app_uid("wiki", 70000, 2)
    assert backend.count(ledger, "app_uids") == 2
    assert ledger.app_uid("wiki", 70000, 3) == 70002  # a larger range has room


def test_uids_outside_the_range_do_not_block_it(ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.create_app("blog")
    ledger.app_uid("shop", 60000, 5)  # assigned under an older, different range
    assert ledger.app_uid("blog", 70000, 1) == 70000
    assert ledger.app_uid("shop", 70000, 1) == 60000  # kept: its files are owned by it


@pytest.mark.parametrize("first,count", [(0, 10), (-5, 10), (70000, 0), ("7", 1), (True, 3)])
def test_a_bad_range_is_refused(ledger: Ledger, first, count) -> None:  # type: ignore[no-untyped-def]
    ledger.create_app("shop")
    with pytest.raises(UserError, match="uid_first"):
        ledger.app_uid("shop", first, count)


def test_uid_of_a_missing_app_is_not_found(ledger: Ledger) -> None:
    with pytest.raises(NotFound, match="Couldn't find that app: ghost"):
        ledger.app_uid("ghost", 70000, 10)


def test_two_uids_are_unique_even_against_raw_sql(backend: Backend, ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.create_app("blog")
    ledger.app_uid("shop", 70000, 10)
    blog_id = ledger.get_app("blog").id
    with pytest.raises(backend.db_error, match="(?i)unique"):
        backend.sql(ledger, "INSERT INTO app_uids (app_id, uid) VALUES (?, 70000)", (blog_id,))
    assert ledger.app_uid("blog", 70000, 10) == 70001


def test_concurrent_writers_never_give_two_apps_one_uid(backend: Backend) -> None:
    setup = backend.open()
    names = [f"app{i}" for i in range(20)]
    for name in names:
        setup.create_app(name)
    setup.close()
    results: dict[str, int] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def assign(chunk: list[str]) -> None:
        led = backend.open(busy_timeout=30.0)
        try:
            barrier.wait()
            for name in chunk:
                results[name] = led.app_uid(name, 70000, 100)
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)
        finally:
            led.close()

    threads = [threading.Thread(target=assign, args=(names[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results.values()) == list(range(70000, 70020))


def test_features_are_enabled_disabled_and_go_with_the_app(backend: Backend, ledger: Ledger) -> None:
    ledger.create_app("shop")
    ledger.create_app("blog")
    assert ledger.list_features("shop") == set()
    ledger.set_feature("shop", "preboot", True)
    ledger.set_feature("shop", "preboot", True)  # idempotent
    ledger.set_feature("shop", "runtime-dyno-metadata", True)
    ledger.set_feature("blog", "preboot", False)  # disabling what is off is fine
    assert ledger.list_features("shop") == {"preboot", "runtime-dyno-metadata"}
    assert ledger.list_features("blog") == set()
    ledger.set_feature("shop", "preboot", False)
    assert ledger.list_features("shop") == {"runtime-dyno-metadata"}
    ledger.destroy_app("shop")
    assert backend.count(ledger, "app_features") == 0
    ledger.create_app("shop")
    assert ledger.list_features("shop") == set()


@pytest.mark.parametrize("name", ["", "Preboot", "pre boot", "-x", "a" * 64, "x;drop"])
def test_bad_feature_names_are_refused(ledger: Ledger, name: str) -> None:
    ledger.create_app("shop")
    with pytest.raises(UserError, match="Invalid feature name"):
        ledger.set_feature("shop", name, True)
    assert ledger.list_features("shop") == set()


def test_features_of_a_missing_app_are_not_found(ledger: Ledger) -> None:
    with pytest.raises(NotFound):
        ledger.list_features("ghost")
    with pytest.raises(NotFound):
        ledger.set_feature("ghost", "preboot", True)


def test_a_v3_ledger_gains_uids_and_features_in_place(backend: Backend) -> None:
    backend.build_old_schema(3)
    led = backend.open()
    try:
        assert led.schema_version() == SCHEMA_VERSION
        assert led.app_uid("shop", 70000, 10) == 70000
        led.set_feature("shop", "preboot", True)
        assert led.list_features("shop") == {"preboot"}
    finally:
        led.close()
