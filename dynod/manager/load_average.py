"""Load averages per dyno, as the kernel damps its own: pure arithmetic over samples handed in.

Every ``SAMPLE_EVERY`` seconds the watch stage counts a dyno's runnable tasks (dynod.linux.load)
and folds the count into three exponentially damped averages, one per window (1, 5, 15 minutes):
``avg = avg * e + n * (1 - e)`` with ``e = exp(-dt / window)``, the kernel's ``calc_load`` with
the actual time since the last sample (dynod's loop may run late; the kernel's tick never does).
Heroku reports these as ``sample#load_avg_1m``, ``_5m`` and ``_15m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SAMPLE_EVERY = 5.0  # seconds, the kernel's LOAD_FREQ
WINDOWS = (60.0, 300.0, 900.0)


@dataclass(slots=True)
class LoadAverage:
    """One dyno's three load averages; they start at 0, as a fresh kernel's do."""

    avg_1m: float = 0.0
    avg_5m: float = 0.0
    avg_15m: float = 0.0
    sampled_at: float | None = None

    def fold(self, runnable: int, now: float) -> None:
        """Count ``runnable`` tasks seen at ``now``. The first sample stands for the interval
        before it, so a dyno's averages grow from 0 with the time it is busy, as the kernel's do."""
        if runnable < 0:
            raise ValueError(f"a task count is never negative, got {runnable}")
        if self.sampled_at is None:
            dt = SAMPLE_EVERY  # its first sample stands for the interval before it
        else:
            dt = now - self.sampled_at
            if dt <= 0:
                return  # a clock that stepped back: the next sample counts from here
        self.sampled_at = now
        e1, e5, e15 = (math.exp(-dt / window) for window in WINDOWS)
        self.avg_1m = self.avg_1m * e1 + runnable * (1 - e1)
        self.avg_5m = self.avg_5m * e5 + runnable * (1 - e5)
        self.avg_15m = self.avg_15m * e15 + runnable * (1 - e15)

    def sample(self) -> dict[str, float]:
        """The fields of a runtime-metrics sample (dynod.logplex.metrics.format_sample)."""
        return {"load_avg_1m": self.avg_1m, "load_avg_5m": self.avg_5m, "load_avg_15m": self.avg_15m}
