"""The ledger's pure rules (dynod/ledger/rules.py), without any database."""

from __future__ import annotations

import random

import pytest

from dynod.errors import UserError
from dynod.ledger import rules
from dynod.model import DynoRecord, DynoState, Formation


def test_lowest_free_uid_fills_the_first_hole() -> None:
    assert rules.lowest_free_uid(100, 5, []) == 100
    assert rules.lowest_free_uid(100, 5, [100, 101, 103]) == 102
    assert rules.lowest_free_uid(100, 5, [101]) == 100
    assert rules.lowest_free_uid(100, 5, [100, 101, 102, 103]) == 104


def test_a_full_uid_range_says_which_setting_to_raise() -> None:
    with pytest.raises(UserError, match=r"^no free uid in \[100, 102\): raise \[dynos\] uid_count") as info:
        rules.lowest_free_uid(100, 2, [100, 101])
    assert info.value.status == 503


@pytest.mark.parametrize("first, count", [(0, 1), (1, 0), (-1, 5), (1.5, 2), (None, 2), (False, 1)])
def test_bad_uid_ranges(first, count) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="uid_first and uid_count"):
        rules.check_uid_range(first, count)


def test_formation_shows_declared_types_and_stored_rows_sorted() -> None:
    stored = [Formation(app="shop", type="worker", quantity=2, size="standard-2X")]
    rows = rules.formation_of("shop", stored, ["web", "clock"])
    assert [(f.type, f.quantity, f.size) for f in rows] == [
        ("clock", 0, "standard-1X"), ("web", 0, "standard-1X"), ("worker", 2, "standard-2X")]


def test_run_numbers_avoid_names_in_use_and_fall_back_to_a_scan() -> None:
    used = {f"run.{n}" for n in rules.RUN_NUMBER_RANGE if n != 5555}
    assert rules.pick_run_number("shop", used, random.Random(3)) == 5555
    with pytest.raises(UserError, match="stop some first") as info:
        rules.pick_run_number("shop", used | {"run.5555"}, random.Random(3))
    assert info.value.status == 429


def test_eco_and_basic_dynos_run_one_per_type() -> None:
    rules.check_dyno_count(Formation(app="a", type="web", quantity=1, size="eco"))
    rules.check_dyno_count(Formation(app="a", type="web", quantity=5, size="standard-1X"))
    with pytest.raises(UserError, match="more than 1 Basic"):
        rules.check_dyno_count(Formation(app="a", type="web", quantity=2, size="Basic"))


@pytest.mark.parametrize("quantity", [-1, rules.MAX_QUANTITY + 1, True, 1.0, "2"])
def test_bad_quantities(quantity) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="Invalid quantity"):
        rules.check_quantity("web", quantity)


def test_good_and_bad_names() -> None:
    rules.check_feature_name("runtime-dyno-metadata")
    rules.check_hostname("*.shop.example.com")
    rules.check_routing_policy("p2c")
    for bad, check in [("Preboot", rules.check_feature_name), ("ex ample.com", rules.check_hostname),
                       ("round-robin", rules.check_routing_policy), ("done", rules.check_status),
                       ("we b", rules.check_process_type)]:
        with pytest.raises(UserError):
            check(bad)
    with pytest.raises(UserError, match="Invalid config var 'A'"):
        rules.check_str_map({"A": 1}, "config var")


def test_dynos_sort_by_app_type_and_numeric_index() -> None:
    def dyno(app: str, name: str) -> DynoRecord:
        return DynoRecord(id=f"{app}.{name}", app=app, name=name, type=name.split(".")[0], release=1,
                          size="eco", command="x", state=DynoState.UP, pid=None, ip=None, port=5000,
                          created_at=0.0, state_changed_at=0.0)

    dynos = [dyno("shop", "web.10"), dyno("blog", "web.1"), dyno("shop", "web.2"), dyno("shop", "run.4821")]
    assert [(d.app, d.name) for d in sorted(dynos, key=rules.dyno_sort_key)] == [
        ("blog", "web.1"), ("shop", "run.4821"), ("shop", "web.2"), ("shop", "web.10")]


def test_json_is_stored_canonically() -> None:
    assert rules.dump_json({"b": "2", "a": "1"}) == '{"a":"1","b":"2"}'
