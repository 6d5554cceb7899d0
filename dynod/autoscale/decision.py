"""The autoscaling decision: recent p95s, the quantity now, the bounds, the last change -> the
quantity wanted and why. Pure; the autoscaler (autoscaler.py) feeds it and carries it out.

Damped the way Heroku's performance-tier autoscaling is, so it never flaps:
- hysteresis: up only while p95 is over the goal, down only while it is well under it
  (``down_ratio`` of the goal); in between, hold;
- persistence: up after ``up_windows`` windows in a row over the goal, down after
  ``down_windows`` in a row well under (more, so it is slower to give capacity back);
- cool-down: nothing for ``cooldown`` seconds after a change, and only windows that started after
  the last change count (the ones before measured another quantity);
- one step at a time, within [minimum, maximum].
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    start: float  # when it began (seconds since the epoch)
    p95_ms: float | None  # None: no request was answered in it
    requests: int


@dataclass(frozen=True, slots=True)
class Policy:
    minimum: int
    maximum: int
    p95_goal_ms: float


@dataclass(frozen=True, slots=True)
class Damping:
    up_windows: int = 3
    down_windows: int = 5
    down_ratio: float = 0.5
    cooldown: float = 300.0


@dataclass(frozen=True, slots=True)
class Decision:
    quantity: int
    reason: str


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


def decide(windows: list[Window], quantity: int, policy: Policy, damping: Damping, *,
           last_change_at: float | None, now: float, since: float | None = None) -> Decision:
    """The quantity to run now. ``windows``: complete windows, oldest first; only those that began
    at or after the last change and ``since`` (when autoscaling was turned on) count."""
    goal = policy.p95_goal_ms
    if quantity < policy.minimum:
        return Decision(policy.minimum, f"below the minimum of {policy.minimum}")
    if quantity > policy.maximum:
        return Decision(policy.maximum, f"above the maximum of {policy.maximum}")
    if last_change_at is not None and now - last_change_at < damping.cooldown:
        return Decision(quantity, f"cooling down for {damping.cooldown - (now - last_change_at):.0f} s more "
                                  "after the last change")
    start = max(t for t in (last_change_at, since, float("-inf")) if t is not None)
    fresh = [w for w in windows if w.start >= start]
    recent_up = fresh[-damping.up_windows:]
    if len(recent_up) == damping.up_windows and all(w.requests and w.p95_ms is not None and w.p95_ms > goal
                                                    for w in recent_up):
        worst = min(w.p95_ms for w in recent_up if w.p95_ms is not None)
        over = f"p95 over the {_ms(goal)} goal for {len(recent_up)} windows in a row (at least {_ms(worst)})"
        if quantity >= policy.maximum:
            return Decision(quantity, f"{over}, but already at the maximum of {policy.maximum}")
        return Decision(quantity + 1, over)
    recent_down = fresh[-damping.down_windows:]
    floor = goal * damping.down_ratio
    if len(recent_down) == damping.down_windows and all(w.p95_ms is None or w.p95_ms < floor for w in recent_down):
        seen = [w.p95_ms for w in recent_down if w.p95_ms is not None]
        under = (f"p95 under {_ms(floor)} ({damping.down_ratio:g} x the {_ms(goal)} goal) for "
                 f"{len(recent_down)} windows in a row" + (f" (at most {_ms(max(seen))})" if seen else " (no traffic)"))
        if quantity <= policy.minimum:
            return Decision(quantity, f"{under}, but already at the minimum of {policy.minimum}")
        return Decision(quantity - 1, under)
    last = fresh[-1] if fresh else None
    if last is None or last.p95_ms is None:
        return Decision(quantity, "holding: not enough measured windows since the last change")
    return Decision(quantity, f"holding: p95 {_ms(last.p95_ms)} against a {_ms(goal)} goal")
