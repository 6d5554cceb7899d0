"""Heroku Scheduler for dynod: jobs on a cadence, each run a one-off ``scheduler.N`` dyno, each
slot run at most once across restarts and clock jumps (docs/scheduler.md)."""

from .cadence import Cadence, parse_cadence
from .scheduler import Scheduler
from .slot import Due, ScheduleClock, due_slot
from .store import SchedulerStore

__all__ = ["Cadence", "Due", "ScheduleClock", "Scheduler", "SchedulerStore", "due_slot", "parse_cadence"]
