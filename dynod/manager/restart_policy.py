"""Heroku's dyno crash restart policy, as pure arithmetic over times handed in.

What Heroku's Dev Center states (see docs/manager.md for the quotes and sources):
- any exit of the dyno's process is a crash, exit code 0 included;
- the first crash restarts the dyno at once;
- each further crash in a row waits a cool-off that grows, up to a maximum;
- the cool-off resets when the dyno starts correctly, on a new release, on a manual restart and
  on a scale to 0 and back.

Here: the n-th crash in a row waits ``0`` for n = 1, then ``base * 2**(n-2)`` capped at ``max``
(defaults from settings: 20 s, 40 s, 80 s ... 1200 s = Heroku's 20 minutes). "Started
correctly" is made measurable as: the dyno ran for at least ``stable_after`` seconds before it
crashed (10 minutes by default, the same window Kubernetes uses to forget a crash loop), so an
occasional crash of a long-running process always restarts at once.

Two equivalent ways in, for two kinds of caller:
- ``next_restart_delay(crash_times, now=...)``: a pure function over the slot's crash times
  alone. It assumes each restart happened as soon as allowed, so the run after crash k lasted
  ``crash[k+1] - (crash[k] + cooloff(k))``; a run of ``stable_after`` or more starts a new count.
- ``CrashHistory``: a small object per slot, told each run's real start time, for callers that
  know it.
Neither knows about releases by itself: a new release must reset (drop the crash times, or pass
the release to ``CrashHistory.record_crash``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..settings import DynoSettings

STABLE_AFTER = 600.0
_MAX_DOUBLINGS = 64  # beyond this 2**n only overflows; the cap has long applied


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    cooloff_base: float = 20.0
    cooloff_max: float = 1200.0
    stable_after: float = STABLE_AFTER

    @classmethod
    def from_settings(cls, dynos: DynoSettings, *, stable_after: float = STABLE_AFTER) -> RestartPolicy:
        return cls(cooloff_base=dynos.restart_cooloff_base, cooloff_max=dynos.restart_cooloff_max,
                   stable_after=stable_after)

    def cooloff(self, consecutive_crashes: int) -> float:
        """Seconds to wait before restarting after the n-th crash in a row (n >= 1)."""
        if consecutive_crashes <= 1:
            return 0.0
        doublings = min(consecutive_crashes - 2, _MAX_DOUBLINGS)
        return min(self.cooloff_max, self.cooloff_base * 2.0 ** doublings)


@dataclass(slots=True)
class CrashHistory:
    """One dyno slot's (say myapp's web.1) run of consecutive crashes; survives its replacements."""

    policy: RestartPolicy
    consecutive: int = 0
    release: int | None = None  # the release the counted crashes happened on

    def record_crash(self, *, started_at: float, crashed_at: float, release: int) -> float:
        """Count a crash of a dyno that started at ``started_at``; return when it may restart."""
        if release != self.release or crashed_at - started_at >= self.policy.stable_after:
            self.consecutive = 0  # a new release, or a run long enough to count as a good start
        self.release = release
        self.consecutive += 1
        return crashed_at + self.policy.cooloff(self.consecutive)

    def reset(self) -> None:
        """Forget the crashes: a manual restart, or the type scaled to 0 and back."""
        self.consecutive = 0
        self.release = None


def consecutive_crashes(crash_times: Sequence[float], policy: RestartPolicy) -> int:
    """How many crashes in a row end ``crash_times`` (a run of ``stable_after`` breaks a row)."""
    count = 0
    restarted_at: float | None = None
    for crashed_at in sorted(crash_times):
        if restarted_at is not None and crashed_at - restarted_at >= policy.stable_after:
            count = 0
        count += 1
        restarted_at = crashed_at + policy.cooloff(count)
    return count


def next_restart_delay(crash_times: Sequence[float], *, now: float, base: float = 20.0,
                       maximum: float = 1200.0, stable_after: float = STABLE_AFTER) -> float:
    """Seconds from ``now`` until a slot whose crashes happened at ``crash_times`` may restart."""
    if not crash_times:
        return 0.0
    policy = RestartPolicy(cooloff_base=base, cooloff_max=maximum, stable_after=stable_after)
    restart_at = max(crash_times) + policy.cooloff(consecutive_crashes(crash_times, policy))
    return max(0.0, restart_at - now)
