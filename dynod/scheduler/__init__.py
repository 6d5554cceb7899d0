"""Heroku Scheduler for dynod: jobs on a cadence, each run a one-off ``scheduler.N`` dyno, each
slot run at most once across restarts and clock jumps (docs/scheduler.md).

Each public name is imported from its module on first use (dynod/exports.py), so importing one
module of the package never loads the others.
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "Cadence": "cadence",
    "parse_cadence": "cadence",
    "Scheduler": "scheduler",
    "Due": "slot",
    "ScheduleClock": "slot",
    "due_slot": "slot",
    "Job": "store",
    "Run": "store",
    "SchedulerStore": "store",
}, globals())
