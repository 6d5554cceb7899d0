"""The dyno manager's logic, pure: desired formation + actual dynos -> actions (``reconcile``),
when a crashed dyno may start again (``restart_policy``), when a dyno is due for its daily
cycle (``cycling``). No I/O, no trio, no clocks: time comes in as arguments, so every rule
tests in microseconds. The loop that applies actions lives with the daemon."""

from .cycling import due_for_cycling, next_cycle_at
from .reconcile import Action, Start, Stop, is_one_off, reconcile
from .restart_policy import CrashHistory, RestartPolicy, next_restart_delay

__all__ = ["Action", "CrashHistory", "RestartPolicy", "Start", "Stop", "due_for_cycling", "is_one_off",
           "next_cycle_at", "next_restart_delay", "reconcile"]
