"""Daily cycling: 24 h plus a random 0-216 min per dyno."""

from __future__ import annotations

import random

import pytest

from dynod.manager.cycling import due_for_cycling, next_cycle_at
from dynod.model import DynoRecord, DynoState

DAY = 24 * 3600.0
JITTER = 216 * 60.0


def test_cycle_time_is_a_day_plus_at_most_216_minutes() -> None:
    rng = random.Random(42)
    times = [next_cycle_at(1000.0, rng) - 1000.0 for _ in range(2000)]
    assert all(DAY <= t <= DAY + JITTER for t in times)
    # Spread over the window, so an app's dynos do not all cycle together.
    assert min(times) < DAY + JITTER * 0.05 and max(times) > DAY + JITTER * 0.95


def test_cycle_time_follows_the_rng_and_arguments() -> None:
    assert next_cycle_at(0.0, random.Random(1)) == next_cycle_at(0.0, random.Random(1))
    assert next_cycle_at(50.0, random.Random(1), hours=1, jitter_minutes=0) == 3650.0


@pytest.mark.parametrize("hours, jitter", [(0, 10), (-1, 10), (24, -1)])
def test_nonsense_periods_are_refused(hours: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        next_cycle_at(0.0, random.Random(), hours=hours, jitter_minutes=jitter)


def dyno(id: str, state: DynoState = DynoState.UP) -> DynoRecord:
    return DynoRecord(id=id, app="shop", name="web.1", type="web", release=1, size="standard-1X",
                      command="x", state=state, pid=1, ip=None, port=5000, created_at=0.0,
                      state_changed_at=0.0)


def test_due_dynos_are_running_ones_past_their_time_oldest_first() -> None:
    dynos = [dyno("a"), dyno("b"), dyno("c"), dyno("d", DynoState.CRASHED), dyno("e", DynoState.DOWN),
             dyno("f")]
    cycle_at = {"a": 200.0, "b": 100.0, "c": 301.0, "d": 0.0, "e": 0.0}  # f: not scheduled
    assert [d.id for d in due_for_cycling(dynos, cycle_at, now=300.0)] == ["b", "a"]
