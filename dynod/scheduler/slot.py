"""Which slot of a job is due now: a pure decision, and the clock slots are read on.

A slot is one time a job's cadence names (12:10:00 for "every 10 minutes"). A job remembers the
latest slot it has claimed (``last_slot``): a slot is due when it is later than that and not in
the future. Only the latest due slot ever runs, so a dynod that was down over three slots, or a
clock that jumped forward an hour, runs the job once, not once per slot it missed; with
``catch_up`` off such a missed slot is skipped instead. A clock that jumps back finds every slot
up to ``last_slot`` claimed already, so none runs twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .cadence import Cadence

# A slot found within this long (on the schedule's clock) of its time is "on time"; an older one
# was missed (dynod was down, or the clock jumped) and runs only if the job catches up.
ON_TIME = 60.0

# Where the test clock's fast time and wall time coincide (2026-01-01T00:00:00Z): a fixed point,
# so a restarted dynod reads the same schedule time as the one before it.
CLOCK_ORIGIN = 1767225600.0


@dataclass(frozen=True, slots=True)
class Due:
    slot: float | None  # the slot to run now, or None
    skipped: float | None = None  # a missed slot passed over (catch_up off): recorded, not run
    missed: bool = False  # the slot to run is a late one (dynod was down, or the clock jumped)


def due_slot(cadence: Cadence, *, last_slot: float | None, created_at: float, now: float, catch_up: bool) -> Due:
    """The slot to claim now (at most one), given the latest claimed one and the job's birth."""
    latest = cadence.latest_at_or_before(now)
    floor = created_at if last_slot is None else last_slot
    if latest <= floor:
        return Due(None)
    if now - latest < ON_TIME:
        return Due(latest)
    if catch_up:
        return Due(latest, missed=True)
    return Due(None, skipped=latest)


@dataclass(frozen=True, slots=True)
class ScheduleClock:
    """Wall time as the scheduler reads it; ``rate`` > 1 only in tests ([scheduler] clock_rate).

    At rate r the schedule's time runs r times as fast as wall time (about CLOCK_ORIGIN), so a
    test's ``* * * * *`` job fires every 60/r seconds while every rule (claiming, missed slots,
    restarts) is exercised exactly as at rate 1.
    """

    rate: float = 1.0
    wall: Callable[[], float] = time.time

    def now(self) -> float:
        return self.to_schedule(self.wall())

    def to_schedule(self, wall: float) -> float:
        return CLOCK_ORIGIN + (wall - CLOCK_ORIGIN) * self.rate

    def to_wall(self, schedule: float) -> float:
        return CLOCK_ORIGIN + (schedule - CLOCK_ORIGIN) / self.rate
