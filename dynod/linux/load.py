"""How many of a dyno's tasks want a CPU right now: the input of its load averages.

The kernel's load average counts, every 5 s, the tasks that are running or waiting for a CPU
(state R) and those in uninterruptible sleep (state D, mostly waiting on disk I/O). Heroku's
``load_avg_1m`` is that figure for one dyno. No cgroup file carries it (cpu.stat has CPU time and
throttling, not the run queue), so it is counted here from /proc: every thread of every process
in the dyno's cgroup, by the state letter of /proc/PID/task/TID/stat.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

# R: running or runnable; D: uninterruptible sleep. The kernel's loadavg counts both.
LOADED_STATES = frozenset("RD")


def task_state(stat: str) -> str:
    """The state letter of one /proc/.../stat line ("" if it is not one).

    The command name in parentheses may hold spaces and parentheses itself (a process can name
    itself anything), so the state is the first field after the *last* closing parenthesis.
    """
    _, paren, rest = stat.rpartition(")")
    if not paren:
        return ""
    fields = rest.split(maxsplit=1)
    return fields[0] if fields else ""


def runnable_tasks(pids: Iterable[int], proc: str = "/proc") -> int:
    """The threads of ``pids`` that are running, waiting for a CPU, or in uninterruptible sleep.

    A process or thread that exits while it is counted simply does not count.
    """
    count = 0
    for pid in pids:
        try:
            tids = os.listdir(f"{proc}/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"{proc}/{pid}/task/{tid}/stat") as f:
                    state = task_state(f.read())
            except OSError:
                continue
            if state in LOADED_STATES:
                count += 1
    return count
