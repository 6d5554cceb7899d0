"""Autoscaling web dynos on the router's measured p95 response time, as Heroku's performance-tier
autoscaling does: damped (hysteresis, persistence, cool-down, one step at a time), within bounds
and within what the host can hold (docs/autoscaling.md)."""

from .autoscaler import Autoscaler
from .decision import Damping, Decision, Policy, Window, decide
from .policy import AUTOSCALE_TYPE, check_policy, parse_goal
from .store import AutoscaleStore
from .windows import ResponseWindows

__all__ = ["AUTOSCALE_TYPE", "AutoscaleStore", "Autoscaler", "Damping", "Decision", "Policy", "ResponseWindows",
           "Window", "check_policy", "decide", "parse_goal"]
