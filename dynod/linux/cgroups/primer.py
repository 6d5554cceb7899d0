"""The move primer: a move that moves nothing, so that a cold dyno's real moves find the kernel's
cgroup write lock ready.

Every cgroup v1 move (a ``cgroup.procs`` or ``tasks`` write naming a pid) takes the kernel's global
cgroup write lock. Without the host tuning ``favordynmods`` the first write of a burst waits out
an RCU grace period before it gets it (7-19 ms measured, docs/operations.md); writes for about one
grace period after the last one get it at once (~0.15 ms). A cold dyno is moved into its three
groups after the spawner has forked it, ~6 ms into its start, and so paid most of a grace period.

The primer is one thread of dynod that lives alone in a group dynod made (``PRIMER_GROUP`` in one
v1 hierarchy) and, when told (``prime``, as soon as a cold dyno's groups are made), writes its own
thread id into that group's ``tasks`` file: a move into the group it is already in. The kernel
takes the lock for it, waits the grace period, and moves nothing; the start meanwhile makes its
group, ledger row and fork, and its moves then take the lock without that wait (or with what is
left of it). No other group is written, no process is moved, and nothing stays behind: the thread
ends with dynod, and ``close`` removes the group.
"""

from __future__ import annotations

import logging
import os
import threading

from .paths import rmdir_when_empty, write

log = logging.getLogger("dynod.cgroups")

PRIMER_GROUP = ".move-primer"  # not a dyno name (those start with the app's name): names() skips it
# Where the primer's thread lives, first mounted first: pids and cpu account threads one by one
# (memory's v1 charges a thread's pages to its process's group wherever the thread is).
PRIMER_CONTROLLERS = ("pids", "cpu", "memory")


class MovePrimer:
    def __init__(self, group: str) -> None:
        self.group = group
        self.primes = 0  # no-op moves done after the thread joined its group (for tests)
        self._tasks = os.path.join(group, "tasks")
        self._wanted = threading.Event()
        self._joined = threading.Event()
        self._closed = False
        self._failed: OSError | None = None
        self._tid = 0
        os.makedirs(group, exist_ok=True)  # a dynod killed -9 leaves it, empty: taken over
        self._thread = threading.Thread(target=self._run, name="cgroup-move-primer", daemon=True)
        self._thread.start()

    @property
    def tid(self) -> int:
        """The primer thread's id (0 until it has started)."""
        return self._tid

    def wait_joined(self, timeout: float | None = None) -> OSError | None:
        """Wait until the thread is in its group (its one real move); the error if it could not."""
        self._joined.wait(timeout)
        return self._failed

    def prime(self) -> None:
        """Start a no-op move now, unless one is already under way (never blocks)."""
        if self._failed is None and not self._closed:
            self._wanted.set()

    def close(self) -> None:
        """End the thread and remove its group (idempotent)."""
        if not self._closed:
            self._closed = True
            self._wanted.set()
            self._thread.join()
        try:
            rmdir_when_empty(self.group)  # the ended thread counts for a moment
        except OSError as exc:
            log.warning("cgroup of the move primer not removed: %s", exc)

    def _run(self) -> None:
        self._tid = threading.get_native_id()
        try:
            write(self._tasks, self._tid)
        except OSError as exc:
            self._failed = exc
            log.warning("no move primer (%s): cold dynos wait out the cgroup lock's grace period", exc)
            return
        finally:
            self._joined.set()
        while True:
            self._wanted.wait()
            self._wanted.clear()  # a prime() during the write below asks for one more: cheap then
            if self._closed:
                return
            try:
                write(self._tasks, self._tid)
            except OSError as exc:  # the group went (an operator): the starts just lose the head start
                self._failed = exc
                log.warning("move primer stopped: %s", exc)
                return
            self.primes += 1
