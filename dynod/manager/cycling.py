"""Daily cycling: every dyno restarts once per 24 hours plus a random 0-216 minutes.

Heroku (Dev Center, "Dyno Restarts"): the jitter keeps an app's dynos from all cycling at the
same moment; one-off dynos cycle too (so a dyno lives at most 24 h + 216 min); manual restarts
and releases reset the period. That last rule needs no code: the period counts from each
dyno's own start, and a restart or release starts a new dyno.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from ..model import DynoRecord, DynoState

_CYCLED_STATES = (DynoState.STARTING, DynoState.UP)


def next_cycle_at(started_at: float, rng: random.Random, hours: float = 24.0,
                  jitter_minutes: float = 216.0) -> float:
    """When a dyno started at ``started_at`` is cycled: hours later plus 0..jitter minutes."""
    if hours <= 0 or jitter_minutes < 0:
        raise ValueError(f"cycling needs hours > 0 and jitter_minutes >= 0, got {hours}, {jitter_minutes}")
    return started_at + hours * 3600.0 + rng.uniform(0.0, jitter_minutes * 60.0)


def due_for_cycling(dynos: Iterable[DynoRecord], cycle_at: dict[str, float], now: float) -> list[DynoRecord]:
    """Running dynos whose cycle time (by dyno id) has come, oldest deadline first.

    A formation dyno that is cycled is stopped and reconcile starts its replacement; a one-off
    dyno is only stopped (one-offs are never restarted).
    """
    due = [d for d in dynos if d.state in _CYCLED_STATES and d.id in cycle_at and cycle_at[d.id] <= now]
    return sorted(due, key=lambda d: (cycle_at[d.id], d.id))
