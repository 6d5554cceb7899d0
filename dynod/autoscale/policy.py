"""What `ps:autoscale:enable` accepts: the bounds and the p95 goal, checked into one clear line."""

from __future__ import annotations

import re

from ..errors import UserError
from .decision import Policy

# Heroku: autoscaling is for web dynos (the router's response times are a web type's only).
AUTOSCALE_TYPE = "web"
MIN_GOAL_MS = 1.0
MAX_GOAL_MS = 30_000.0  # the router's H12 timeout: a slower p95 goal can never be measured
_GOAL = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s)?")


def parse_goal(text: str) -> float:
    """'500ms', '1.5s' or '500' (milliseconds) as milliseconds."""
    match = _GOAL.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None:
        raise UserError(f"Invalid p95 goal {str(text)[:40]!r}: give a response time like 500ms or 1.5s.")
    value = float(match.group(1)) * (1000 if match.group(2) == "s" else 1)
    if not MIN_GOAL_MS <= value <= MAX_GOAL_MS:
        raise UserError(f"Invalid p95 goal {text.strip()[:40]!r}: it must be from 1ms to 30s (the router's "
                        "timeout).")
    return value


def check_policy(minimum: object, maximum: object, goal_ms: float, *, limit: int) -> Policy:
    """The bounds as a Policy: whole numbers, 1 <= minimum <= maximum <= ``limit``."""
    for name, value in (("min", minimum), ("max", maximum)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"--{name} must be a whole number of dynos, not {str(value)[:20]!r}.")
    assert isinstance(minimum, int) and isinstance(maximum, int)
    if minimum < 1:
        raise UserError("--min must be at least 1: autoscaling never scales web to 0 (use ps:scale web=0).")
    if maximum > limit:
        raise UserError(f"--max {maximum} is over the platform's limit of {limit} dynos per process type.")
    if minimum > maximum:
        raise UserError(f"--min {minimum} is above --max {maximum}: give a minimum at or below the maximum.")
    return Policy(minimum, maximum, goal_ms)
