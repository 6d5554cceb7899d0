"""The autoscaling decision (pure) and its inputs: goals, bounds, the router's windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dynod.autoscale import (
    Autoscaler,
    AutoscaleStore,
    Damping,
    Policy,
    ResponseWindows,
    Window,
    check_policy,
    decide,
    parse_goal,
)
from dynod.errors import UserError

POLICY = Policy(minimum=1, maximum=4, p95_goal_ms=500)
DAMP = Damping(up_windows=3, down_windows=5, down_ratio=0.5, cooldown=120)


def windows(*p95s: float | None, start: float = 1000, step: float = 60) -> list[Window]:
    return [Window(start + i * step, p, 0 if p is None else 100) for i, p in enumerate(p95s)]


def test_scales_up_one_step_after_enough_slow_windows() -> None:
    d = decide(windows(800, 900, 700), 2, POLICY, DAMP, last_change_at=None, now=2000)
    assert d.quantity == 3 and "over the 500 ms goal for 3 windows" in d.reason and "700 ms" in d.reason


def test_one_or_two_slow_windows_are_not_enough() -> None:
    assert decide(windows(100, 900, 900), 2, POLICY, DAMP, last_change_at=None, now=2000).quantity == 2
    assert decide(windows(900, 900), 2, POLICY, DAMP, last_change_at=None, now=2000).quantity == 2


def test_hysteresis_holds_between_half_the_goal_and_the_goal() -> None:
    d = decide(windows(300, 400, 450, 300, 499), 3, POLICY, DAMP, last_change_at=None, now=2000)
    assert d.quantity == 3 and d.reason.startswith("holding")


def test_scales_down_one_step_when_well_under_for_longer() -> None:
    assert decide(windows(100, 100, 100, 100), 3, POLICY, DAMP, last_change_at=None, now=2000).quantity == 3
    d = decide(windows(100, None, 100, 200, 240), 3, POLICY, DAMP, last_change_at=None, now=2000)
    assert d.quantity == 2 and "under 250 ms" in d.reason


def test_cooldown_and_windows_before_the_change_do_not_count() -> None:
    slow = windows(900, 900, 900, 900, 900)  # starts 1000 .. 1240
    d = decide(slow, 2, POLICY, DAMP, last_change_at=1100, now=1200)
    assert d.quantity == 2 and "cooling down" in d.reason
    # Cool-down over, but only the windows from 1120 on measured the new quantity: 3 of them.
    assert decide(slow, 2, POLICY, DAMP, last_change_at=1100, now=1300).quantity == 3
    assert decide(slow, 2, POLICY, DAMP, last_change_at=1130, now=1300).quantity == 2
    # Nor those from before autoscaling was turned on.
    assert decide(slow, 2, POLICY, DAMP, last_change_at=None, now=1300, since=1130).quantity == 2


def test_bounds_are_kept() -> None:
    assert decide(windows(900, 900, 900), 4, POLICY, DAMP, last_change_at=None, now=2000).quantity == 4
    assert "maximum" in decide(windows(900, 900, 900), 4, POLICY, DAMP, last_change_at=None, now=2000).reason
    assert decide(windows(None, None, None, None, None), 1, POLICY, DAMP, last_change_at=None, now=2000).quantity == 1
    assert decide([], 0, POLICY, DAMP, last_change_at=None, now=2000).quantity == 1
    assert decide([], 9, POLICY, DAMP, last_change_at=1990, now=2000).quantity == 4


def test_it_never_flaps_under_an_oscillating_load() -> None:
    """A p95 that alternates around the goal each window makes no change at all."""
    quantity, last_change = 2, None
    series = [900 if i % 2 else 300 for i in range(40)]
    for i in range(3, 40):
        d = decide(windows(*series[:i]), quantity, POLICY, DAMP, last_change_at=last_change, now=1000 + i * 60)
        if d.quantity != quantity:
            quantity, last_change = d.quantity, 1000 + i * 60
    assert quantity == 2


@pytest.mark.parametrize(("text", "ms"), [("500ms", 500), ("1.5s", 1500), ("250", 250), (" 2 S ", 2000)])
def test_goals(text: str, ms: float) -> None:
    assert parse_goal(text) == ms


@pytest.mark.parametrize("text", ["", "fast", "-5ms", "0ms", "31s", "5 minutes", "1e3"])
def test_a_goal_that_does_not_parse_is_one_clear_line(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_goal(text)
    assert "p95 goal" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("minimum", "maximum", "words"), [
    (5, 2, "above --max"), (0, 3, "at least 1"), (1, 101, "limit of 100"), (True, 3, "whole number"),
    ("1", 3, "whole number"), (None, 3, "whole number"),
])
def test_bad_bounds_are_one_clear_line(minimum: object, maximum: object, words: str) -> None:
    with pytest.raises(UserError) as err:
        check_policy(minimum, maximum, 500, limit=100)
    assert words in str(err.value)


def test_windows_come_from_the_router_lines_of_watched_apps_only() -> None:
    now = [600.0]
    w = ResponseWindows(60, clock=lambda: now[0])
    line = ('at=info method=GET path="/" host=a.localhost request_id=x fwd="127.0.0.1" dyno=web.1 connect=0ms '
            'service={ms}ms status=200 bytes=3 protocol=http')
    w.observe_messages("a", "dynod", "router", [line.format(ms=10)])  # not watched yet: ignored
    w.watch("a")
    for ms in [10] * 94 + [900] * 6:
        w.observe_messages("a", "dynod", "router", [line.format(ms=ms)])
    w.observe_messages("a", "app", "web.1", [line.format(ms=5000)])  # an app's own output is never read
    now[0] = 660.0
    [last] = w.complete("a", 1)
    assert last.requests == 100 and last.p95_ms is not None and 850 < last.p95_ms < 950
    assert [x.requests for x in w.complete("a", 3)] == [0, 0, 100]


async def test_a_refused_step_is_logged_with_the_platforms_reason_and_cools_down(tmp_path: Path) -> None:
    now = [10_000.0]
    lines: list[str] = []
    quantity = {"web": 1}
    w = ResponseWindows(60, clock=lambda: now[0])

    async def formation(app: str) -> list[dict]:
        return [{"type": "web", "quantity": quantity["web"]}]

    async def scale(app: str, type: str, q: int) -> object:
        raise UserError("Not enough memory on this host: scale something down.")

    a = Autoscaler(AutoscaleStore(tmp_path / "a.sqlite3"), windows=w, damping=Damping(1, 1, 0.5, 300),
                   formation=formation, scale=scale, emit=lambda app, m: lines.append(m), limit=100,
                   clock=lambda: now[0])
    a.enable("app", "web", 1, 5, "100ms")
    with pytest.raises(UserError, match="web dynos only"):
        a.enable("app", "worker", 1, 5, "100ms")
    now[0] = 10_060.0
    w.add("app", 900, at=10_061)
    now[0] = 10_125.0
    policy = a.store.get("app", "web")
    assert policy is not None
    d = await a.evaluate(policy)
    assert d is not None and d.quantity == 1 and "refused" in d.reason
    assert "stays at 1 (wanted 2" in lines[-1] and "Not enough memory" in lines[-1]
    policy = a.store.get("app", "web")
    assert policy is not None and policy.last_change_at == 10_125.0
    d = await a.evaluate(policy)
    assert d is not None and "cooling down" in d.reason
    assert a.show("app")[0]["last_decision"]["reason"].startswith("cooling down")
    a.app_destroyed("app")
    assert a.show("app") == [] and "app" not in w.apps
    await trio.lowlevel.checkpoint()
