"""Eco dynos sleep (dynod.manager.sleeping): the idle decision, the sleeping formation, the size rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynod.errors import UserError
from dynod.manager.sleeping import SleepState, asleep, check_sizes, should_sleep, sleep_at, sleeps
from dynod.model import Formation
from dynod.router.routes import RouteTable

IDLE = 30 * 60


def f(type_: str, quantity: int, size: str) -> Formation:
    return Formation(app="a", type=type_, quantity=quantity, size=size)


def test_an_eco_app_sleeps_only_after_the_idle_time_without_a_request():
    formation = [f("web", 1, "eco"), f("worker", 1, "eco")]
    assert not should_sleep(formation, last_request_at=1000.0, now=1000.0 + IDLE - 1, idle_after=IDLE)
    assert should_sleep(formation, last_request_at=1000.0, now=1000.0 + IDLE, idle_after=IDLE)
    assert sleep_at(formation, last_request_at=1000.0, idle_after=IDLE) == 1000.0 + IDLE


@pytest.mark.parametrize("formation", [
    [f("web", 1, "standard-1X")],
    [f("web", 1, "basic")],
    [f("web", 1, "performance-L")],
    [f("web", 1, "eco"), f("worker", 1, "standard-1X")],  # refused by check_sizes, never asleep either
    [f("worker", 1, "eco")],  # no web dyno: no request could ever wake it
    [f("web", 0, "eco"), f("worker", 1, "eco")],
    [],
], ids=["standard", "basic", "performance", "mixed", "worker-only", "web-scaled-to-0", "empty"])
def test_only_eco_apps_with_web_dynos_ever_sleep(formation: list[Formation]):
    assert not sleeps(formation)
    assert not should_sleep(formation, last_request_at=0.0, now=10 * IDLE, idle_after=IDLE)
    assert sleep_at(formation, last_request_at=0.0, idle_after=IDLE) is None


def test_the_size_is_matched_as_dyno_sizes_are_any_case():
    assert sleeps([f("web", 1, "Eco")])


def test_a_sleeping_app_runs_nothing_of_its_formation_but_keeps_it():
    formation = [f("web", 1, "eco"), f("worker", 1, "eco")]
    assert [(x.type, x.quantity, x.size) for x in asleep(formation)] == [("web", 0, "eco"), ("worker", 0, "eco")]
    assert [x.quantity for x in formation] == [1, 1]


def test_eco_cannot_run_beside_other_sizes_one_line():
    current = [f("web", 1, "eco"), f("worker", 0, "standard-1X")]
    check_sizes(current, [])  # a worker at 0 does not count
    check_sizes(current, [("worker", 1, "eco")])
    check_sizes(current, [("web", None, "standard-1X"), ("worker", 1, None)])  # all standard now
    with pytest.raises(UserError) as exc:
        check_sizes(current, [("worker", 1, None)])
    message = str(exc.value)
    assert "\n" not in message and "Eco dynos cannot run beside other sizes" in message
    assert "worker=1:eco" in message
    with pytest.raises(UserError):
        check_sizes([f("web", 1, "standard-1X")], [("worker", 1, "eco")])


def test_sleep_state_survives_a_restart_and_forgets_destroyed_apps(tmp_path: Path):
    path = tmp_path / "sleeping.json"
    state = SleepState(path, idle_after=IDLE)
    assert state.last_request_at("a", 50.0) == 50.0  # first seen: counts as just requested
    assert state.last_request_at("a", 99.0) == 50.0
    state.request_seen("a", 70.0)
    assert state.last_request_at("a", 99.0) == 70.0
    state.fall_asleep("a", 80.0)
    state.fall_asleep("b", 90.0)
    assert state.since == {"a": 80.0, "b": 90.0}
    again = SleepState(path, idle_after=IDLE)
    assert again.sleeping == {"a", "b"}
    assert again.since["a"] == path.stat().st_mtime  # read back: when the file last changed
    assert again.wake("a", 200.0) is True and again.wake("a", 201.0) is False
    assert again.last_request_at("a", 300.0) == 201.0  # woken: idle from the wake
    again.forget({"a"})
    assert SleepState(path, idle_after=IDLE).sleeping == set()


def test_an_unreadable_sleep_file_leaves_every_app_awake(tmp_path: Path):
    path = tmp_path / "sleeping.json"
    path.write_text("{not json")
    assert SleepState(path, idle_after=IDLE).sleeping == set()
    path.write_text('{"a": 1}')
    assert SleepState(path, idle_after=IDLE).sleeping == set()


def test_the_router_reads_the_sleeping_flag_and_refuses_a_bad_one():
    table = RouteTable.from_snapshot({"a": {"sleeping": True}, "b": {}}, "localhost")
    assert table.apps["a"].sleeping and not table.apps["b"].sleeping
    with pytest.raises(UserError, match="sleeping must be true or false"):
        RouteTable.from_snapshot({"a": {"sleeping": "yes"}}, "localhost")


def test_the_idle_setting_defaults_to_herokus_30_minutes_and_refuses_bad_values(tmp_path: Path):
    from dynod.settings import load_settings

    path = tmp_path / "dynod.toml"
    path.write_text("")
    assert load_settings(path).dynos.eco_idle_minutes == 30.0
    path.write_text("[dynos]\neco_idle_minutes = 0.1\n")
    assert load_settings(path).dynos.eco_idle_minutes == 0.1
    for bad in ("0", "-5", "true", "'soon'"):
        path.write_text(f"[dynos]\neco_idle_minutes = {bad}\n")
        with pytest.raises(UserError) as exc:
            load_settings(path)
        assert "[dynos] eco_idle_minutes" in str(exc.value) and "\n" not in str(exc.value)
