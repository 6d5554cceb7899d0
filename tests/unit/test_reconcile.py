"""reconcile: desired formation + actual dynos -> the actions that converge them."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from dynod.manager.reconcile import (
    DUPLICATE,
    NEW_RELEASE,
    NO_RELEASE,
    REPLACED,
    RESIZED,
    RESTART,
    SCALED_DOWN,
    TYPE_REMOVED,
    Start,
    Stop,
    reconcile,
)
from dynod.model import DynoRecord, DynoState, Formation, Release

TYPES = {"web": "gunicorn app", "worker": "celery -A app"}


def rel(version: int = 2, types: dict[str, str] | None = None) -> Release:
    return Release(app="shop", version=version, slug_id="a" * 64, config={}, description="Deploy",
                   created_at=0.0, process_types=TYPES if types is None else types)


def form(**quantities: int) -> list[Formation]:
    return [Formation(app="shop", type=t, quantity=q) for t, q in quantities.items()]


_ids = itertools.count()


def dyno(name: str, *, release: int = 2, state: DynoState = DynoState.UP, size: str = "standard-1X",
         created_at: float = 0.0, changed_at: float = 0.0, attached: bool = False) -> DynoRecord:
    type_name = name.split(".")[0]
    return DynoRecord(id=f"shop.{name}.{next(_ids)}", app="shop", name=name, type=type_name, release=release,
                      size=size, command="cmd", state=state, pid=1, ip=None, port=5000,
                      created_at=created_at, state_changed_at=changed_at, attached=attached)


def start(name: str, release: int = 2, size: str = "standard-1X") -> Start:
    type_name = name.split(".")[0]
    return Start(type=type_name, name=name, release=release, size=size, command=TYPES[type_name])


def run(formation, release, dynos, *, now: float = 100.0, restart_at=None):
    return reconcile(formation, release, dynos, now=now, restart_at=restart_at or {})


def test_an_empty_app_starts_every_slot_in_order() -> None:
    assert run(form(worker=2, web=3), rel(), []) == [
        start("web.1"), start("web.2"), start("web.3"), start("worker.1"), start("worker.2")]


def test_a_converged_app_needs_nothing() -> None:
    dynos = [dyno("web.1"), dyno("web.2", state=DynoState.STARTING), dyno("worker.1")]
    assert run(form(web=2, worker=1), rel(), dynos) == []


def test_scaling_down_stops_the_highest_indices() -> None:
    dynos = [dyno("web.1"), dyno("web.2"), dyno("web.3")]
    assert run(form(web=1), rel(), dynos) == [Stop(dynos[1].id, SCALED_DOWN), Stop(dynos[2].id, SCALED_DOWN)]


def test_scaling_up_fills_only_the_gaps() -> None:
    dynos = [dyno("web.2")]
    assert run(form(web=3), rel(), dynos) == [start("web.1"), start("web.3")]


def test_a_new_release_starts_replacements_at_once_and_stops_the_old() -> None:
    dynos = [dyno("web.1", release=1), dyno("web.2", release=1), dyno("worker.1", release=1)]
    assert run(form(web=2, worker=1), rel(2), dynos) == [
        start("web.1"), start("web.2"), start("worker.1"),
        Stop(dynos[0].id, NEW_RELEASE), Stop(dynos[1].id, NEW_RELEASE), Stop(dynos[2].id, NEW_RELEASE)]


def test_a_new_size_replaces_the_dyno() -> None:
    dynos = [dyno("web.1", size="standard-1X")]
    formation = [Formation(app="shop", type="web", quantity=1, size="standard-2X")]
    assert run(formation, rel(), dynos) == [start("web.1", size="standard-2X"), Stop(dynos[0].id, RESIZED)]


def test_once_the_replacement_runs_only_the_old_one_is_stopped() -> None:
    old, new = dyno("web.1", release=1), dyno("web.1", release=2, state=DynoState.STARTING)
    assert run(form(web=1), rel(2), [new, old]) == [Stop(old.id, NEW_RELEASE)]


def test_stopping_dynos_are_not_stopped_twice_and_their_slot_is_refilled() -> None:
    down = dyno("web.1", state=DynoState.DOWN)
    extra_down = dyno("web.5", state=DynoState.DOWN)
    assert run(form(web=1), rel(), [down, extra_down]) == [start("web.1")]


def test_a_process_type_removed_from_the_release_stops() -> None:
    dynos = [dyno("web.1"), dyno("worker.1"), dyno("worker.2")]
    assert run(form(web=1, worker=2), rel(types={"web": "gunicorn app"}), dynos) == [
        Stop(dynos[1].id, TYPE_REMOVED), Stop(dynos[2].id, TYPE_REMOVED)]


def test_formation_rows_for_undeclared_types_start_nothing() -> None:
    assert run(form(web=1, clock=3), rel(), []) == [start("web.1")]


def test_without_a_release_nothing_runs() -> None:
    dynos = [dyno("web.1")]
    assert run(form(web=1), None, dynos) == [Stop(dynos[0].id, NO_RELEASE)]


def test_one_off_dynos_are_never_touched() -> None:
    one_offs = [dyno("run.4821", release=1), dyno("run.1234", state=DynoState.CRASHED),
                dyno("web.7", attached=True, release=1)]
    assert run(form(web=0), rel(), one_offs) == []
    assert run(form(), None, one_offs) == []


def test_a_run_process_type_is_not_scaled() -> None:
    assert run(form(run=2, web=1), rel(types={**TYPES, "run": "x"}), []) == [start("web.1")]


def test_a_crashed_dyno_waits_for_its_restart_time() -> None:
    crashed = dyno("web.1", state=DynoState.CRASHED)
    restart_at = {crashed.id: 150.0}
    assert run(form(web=1), rel(), [crashed], now=149.9, restart_at=restart_at) == []
    assert run(form(web=1), rel(), [crashed], now=150.0, restart_at=restart_at) == [start("web.1")]


def test_a_crashed_dyno_without_a_restart_time_restarts_at_once() -> None:
    crashed = dyno("worker.1", state=DynoState.CRASHED)
    assert run(form(worker=1), rel(), [crashed]) == [start("worker.1")]


def test_a_crash_on_an_older_release_restarts_at_once() -> None:
    crashed = dyno("web.1", state=DynoState.CRASHED, release=1)
    assert run(form(web=1), rel(2), [crashed], now=0.0, restart_at={crashed.id: 10_000.0}) == [start("web.1")]


def test_only_the_latest_crash_of_a_slot_counts_and_stale_records_go() -> None:
    older = dyno("web.1", state=DynoState.CRASHED, changed_at=10.0)
    latest = dyno("web.1", state=DynoState.CRASHED, changed_at=20.0)
    assert run(form(web=1), rel(), [latest, older], now=50.0, restart_at={latest.id: 60.0}) == [
        Stop(older.id, REPLACED)]
    due = run(form(web=1), rel(), [latest, older], now=60.0, restart_at={latest.id: 60.0})
    assert due == [start("web.1")]  # the Start replaces both crashed records


def test_a_crashed_record_beside_a_running_dyno_is_cleared() -> None:
    crashed = dyno("web.1", state=DynoState.CRASHED)
    running = dyno("web.1")
    assert run(form(web=1), rel(), [crashed, running]) == [Stop(crashed.id, REPLACED)]


def test_a_crashed_dyno_scaled_away_is_cleared() -> None:
    crashed = dyno("web.2", state=DynoState.CRASHED)
    assert run(form(web=1), rel(), [dyno("web.1"), crashed], restart_at={crashed.id: 1e9}) == [
        Stop(crashed.id, SCALED_DOWN)]


def test_duplicates_keep_the_oldest() -> None:
    first, second = dyno("web.1", created_at=1.0), dyno("web.1", created_at=2.0)
    assert run(form(web=1), rel(), [second, first]) == [Stop(second.id, DUPLICATE)]


def test_malformed_names_are_stopped() -> None:
    odd = dyno("web.x")
    assert run(form(web=0), rel(), [odd]) == [Stop(odd.id, SCALED_DOWN)]


def test_output_does_not_depend_on_input_order() -> None:
    dynos = [dyno("web.1", release=1), dyno("web.3"), dyno("worker.1", state=DynoState.CRASHED),
             dyno("worker.4"), dyno("run.1000"), dyno("web.2", state=DynoState.DOWN)]
    expected = run(form(web=2, worker=2), rel(), dynos)
    rng = random.Random(3)
    for _ in range(20):
        shuffled = dynos[:]
        rng.shuffle(shuffled)
        formation = form(web=2, worker=2)
        rng.shuffle(formation)
        assert run(formation, rel(), shuffled) == expected


@pytest.mark.parametrize("action", [start("web.1"), Stop("x", SCALED_DOWN)])
def test_actions_are_frozen_and_slotted(action) -> None:
    assert not hasattr(action, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(action, dataclasses.fields(action)[0].name, "other")


# -- preboot ----------------------------------------------------------------------------------

def test_preboot_starts_the_new_web_dynos_and_keeps_the_old_ones() -> None:
    dynos = [dyno("web.1", release=1), dyno("web.2", release=1), dyno("worker.1", release=1)]
    assert reconcile(form(web=2, worker=1), rel(2), dynos, now=100.0, restart_at={}, preboot=True) == [
        start("web.1"), start("web.2"), start("worker.1"), Stop(dynos[2].id, NEW_RELEASE)]


def test_preboot_keeps_every_old_web_dyno_until_every_new_one_is_up() -> None:
    old1, old2 = dyno("web.1", release=1), dyno("web.2", release=1)
    new1 = dyno("web.1", release=2, state=DynoState.UP)
    new2 = dyno("web.2", release=2, state=DynoState.STARTING)
    assert reconcile(form(web=2), rel(2), [old1, old2, new1, new2], now=100.0, restart_at={}, preboot=True) == []
    up2 = dataclasses.replace(new2, state=DynoState.UP)
    assert reconcile(form(web=2), rel(2), [old1, old2, new1, up2], now=100.0, restart_at={}, preboot=True) == [
        Stop(old1.id, NEW_RELEASE), Stop(old2.id, NEW_RELEASE)]


def test_without_preboot_the_old_dyno_stops_while_the_new_one_boots() -> None:
    old, new = dyno("web.1", release=1), dyno("web.1", release=2, state=DynoState.STARTING)
    assert reconcile(form(web=1), rel(2), [old, new], now=100.0, restart_at={}) == [Stop(old.id, NEW_RELEASE)]


def test_preboot_a_crashing_new_release_leaves_the_old_dyno_serving() -> None:
    old = dyno("web.1", release=1)
    crashed = dyno("web.1", release=2, state=DynoState.CRASHED, changed_at=90.0)
    restart_at = {crashed.id: 120.0}
    assert reconcile(form(web=1), rel(2), [old, crashed], now=100.0, restart_at=restart_at, preboot=True) == []
    assert reconcile(form(web=1), rel(2), [old, crashed], now=120.0, restart_at=restart_at,
                     preboot=True) == [start("web.1")]


def test_preboot_drops_older_crashes_of_the_new_release_while_the_latest_cools_off() -> None:
    old = dyno("web.1", release=1)
    first = dyno("web.1", release=2, state=DynoState.CRASHED, changed_at=80.0)
    latest = dyno("web.1", release=2, state=DynoState.CRASHED, changed_at=90.0)
    assert reconcile(form(web=1), rel(2), [old, first, latest], now=100.0, restart_at={latest.id: 150.0},
                     preboot=True) == [Stop(first.id, REPLACED)]


def test_preboot_still_scales_down_and_replaces_other_types_at_once() -> None:
    dynos = [dyno("web.1", release=1), dyno("web.2", release=1), dyno("worker.1", release=1)]
    new1 = dyno("web.1", release=2, state=DynoState.STARTING)
    assert reconcile(form(web=1, worker=1), rel(2), [*dynos, new1], now=100.0, restart_at={}, preboot=True) == [
        start("worker.1"), Stop(dynos[1].id, SCALED_DOWN), Stop(dynos[2].id, NEW_RELEASE)]


# -- ps:restart and daily cycling with preboot: the dynos named in ``replacing`` ------------------

def test_preboot_restart_starts_new_web_dynos_first_and_keeps_the_old_ones_serving() -> None:
    web1, web2 = dyno("web.1"), dyno("web.2")
    replacing = {web1.id, web2.id}
    assert reconcile(form(web=2), rel(2), [web1, web2], now=100.0, restart_at={}, preboot=True,
                     replacing=replacing) == [start("web.1"), start("web.2")]
    new1, new2 = dyno("web.1", state=DynoState.UP), dyno("web.2", state=DynoState.STARTING)
    assert reconcile(form(web=2), rel(2), [web1, web2, new1, new2], now=100.0, restart_at={}, preboot=True,
                     replacing=replacing) == []  # one new dyno still boots: nobody stops yet
    up2 = dataclasses.replace(new2, state=DynoState.UP)
    assert reconcile(form(web=2), rel(2), [web1, web2, new1, up2], now=100.0, restart_at={}, preboot=True,
                     replacing=replacing) == [Stop(web1.id, RESTART), Stop(web2.id, RESTART)]


def test_preboot_restart_of_one_web_dyno_replaces_only_that_one() -> None:
    web1, web2 = dyno("web.1"), dyno("web.2")
    assert reconcile(form(web=2), rel(2), [web1, web2], now=100.0, restart_at={}, preboot=True,
                     replacing={web2.id}) == [start("web.2")]
    new2 = dyno("web.2", state=DynoState.UP)
    assert reconcile(form(web=2), rel(2), [web1, web2, new2], now=100.0, restart_at={}, preboot=True,
                     replacing={web2.id}) == [Stop(web2.id, RESTART)]


def test_preboot_restart_whose_new_dyno_crashes_keeps_the_old_one() -> None:
    old = dyno("web.1")
    crashed = dyno("web.1", state=DynoState.CRASHED, changed_at=90.0)
    assert reconcile(form(web=1), rel(2), [old, crashed], now=100.0, restart_at={crashed.id: 130.0},
                     preboot=True, replacing={old.id}) == []
    assert reconcile(form(web=1), rel(2), [old, crashed], now=130.0, restart_at={crashed.id: 130.0},
                     preboot=True, replacing={old.id}) == [start("web.1")]


def test_a_replaced_dyno_without_preboot_is_replaced_at_once() -> None:
    old = dyno("worker.1")
    assert reconcile(form(worker=1), rel(2), [old], now=100.0, restart_at={}, replacing={old.id}) == [
        start("worker.1"), Stop(old.id, RESTART)]


def test_replacing_names_no_dyno_of_the_app_changes_nothing() -> None:
    dynos = [dyno("web.1"), dyno("web.2")]
    assert reconcile(form(web=2), rel(2), dynos, now=100.0, restart_at={}, preboot=True,
                     replacing={"other.web.1.9"}) == []
