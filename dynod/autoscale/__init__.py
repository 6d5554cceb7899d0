"""Autoscaling web dynos on the router's measured p95 response time, as Heroku's performance-tier
autoscaling does: damped (hysteresis, persistence, cool-down, one step at a time), within bounds
and within what the host can hold (docs/autoscaling.md).

Each public name is imported from its module on first use (dynod/exports.py), so importing one
module of the package never loads the others.
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "Autoscaler": "autoscaler",
    "Damping": "decision",
    "Decision": "decision",
    "Policy": "decision",
    "Window": "decision",
    "decide": "decision",
    "AUTOSCALE_TYPE": "policy",
    "check_policy": "policy",
    "parse_goal": "policy",
    "AutoscaleStore": "store",
    "StoredPolicy": "store",
    "ResponseWindows": "windows",
}, globals())
