"""web_routes: which web dynos the router gets, and "booting" rather than H14 while they are replaced."""

from __future__ import annotations

from dynod.manager.web_routes import web_routes
from dynod.model import DynoRecord, DynoState


def web(name: str, state: DynoState = DynoState.UP, id: str | None = None) -> DynoRecord:
    return DynoRecord(id=id or f"shop.{name}", app="shop", name=name, type="web", release=2, size="standard-1X",
                      command="python3 web.py", state=state, pid=1, ip="198.18.0.2", port=5000,
                      created_at=0.0, state_changed_at=0.0)


def test_up_dynos_are_routed_and_nothing_is_held() -> None:
    routes = web_routes([web("web.1"), web("web.2", DynoState.STARTING)], wanted=2)
    assert [d.name for d in routes.dynos] == ["web.1"]
    assert not routes.booting and not routes.crashed


def test_a_leaving_dyno_gets_no_request() -> None:
    routes = web_routes([web("web.1"), web("web.2")], wanted=2, leaving={"shop.web.1"})
    assert [d.name for d in routes.dynos] == ["web.2"]


def test_the_gap_between_old_out_and_new_made_is_booting_not_h14() -> None:
    # ps:restart: the old dyno is on its way down, its replacement is not even "starting" yet.
    routes = web_routes([web("web.1")], wanted=1, leaving={"shop.web.1"})
    assert routes.dynos == () and routes.booting and not routes.crashed
    assert web_routes([], wanted=1).booting


def test_starting_dynos_are_booting_even_when_the_formation_is_gone() -> None:
    assert web_routes([web("web.1", DynoState.STARTING)], wanted=0).booting


def test_no_web_dynos_wanted_is_h14() -> None:
    routes = web_routes([], wanted=0)
    assert routes.dynos == () and not routes.booting and not routes.crashed
    routes = web_routes([web("web.1")], wanted=0, leaving={"shop.web.1"})  # scaled to 0: on its way down
    assert not routes.booting and not routes.crashed


def test_crashed_with_nothing_on_its_way_is_h10() -> None:
    crashed = [web("web.1", DynoState.CRASHED)]
    routes = web_routes([], wanted=1, crashed=crashed)
    assert routes.crashed and not routes.booting


def test_a_crashed_app_whose_replacement_starts_holds_requests() -> None:
    routes = web_routes([web("web.1", DynoState.STARTING, id="new")], wanted=1,
                        crashed=[web("web.1", DynoState.CRASHED, id="old")])
    assert routes.booting and not routes.crashed
