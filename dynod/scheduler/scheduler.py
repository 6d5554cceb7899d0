"""The scheduler's trio side: it wakes at each job's next slot, claims it, and starts its dyno.

Heroku Scheduler's model: a job is a command and a cadence; each run is a one-off dyno
(``scheduler.N``) whose output goes to the app's log stream, never restarted. The order is what
makes "at most once" hold across a kill -9: the slot is claimed in the store (committed and
synced) first, and only then is the dyno asked for. A dynod killed between the two leaves a claim
without a dyno, which the next dynod reports and does not retry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import trio

from ..errors import NotFound, UserError
from .cadence import Cadence, parse_cadence
from .slot import ScheduleClock, due_slot
from .store import Job, SchedulerStore

log = logging.getLogger("dynod.scheduler")

MAX_JOBS_PER_APP = 50
MAX_COMMAND_BYTES = 8192  # as a Procfile line or a one-off dyno's command
# The longest sleep between looks at the clock: a wall clock stepped forward (NTP, a suspended VM)
# is noticed within this long, since trio sleeps on the monotonic clock.
MAX_SLEEP = 15.0

StartDyno = Callable[[str, str, str], Awaitable[dict[str, Any]]]  # (app, command, size) -> dyno json
StopDyno = Callable[[str, str], Awaitable[None]]  # (app, dyno name); NotFound once it is gone
Emit = Callable[[str, str], None]  # (app, message) into the app's log stream


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Scheduler:
    def __init__(self, store: SchedulerStore, *, start_dyno: StartDyno, emit: Emit,
                 clock: ScheduleClock | None = None, stop_dyno: StopDyno | None = None) -> None:
        self.store = store
        self.start_dyno = start_dyno
        self.stop_dyno = stop_dyno
        self.emit = emit
        self.clock = clock or ScheduleClock()
        self._changed = trio.Event()
        self._cadences: dict[str, Cadence] = {}
        self._nursery: trio.Nursery | None = None
        self._started = 0
        self._skipped = 0
        self._failed = 0

    # -- the API's side --------------------------------------------------------------------------

    def add_job(self, app: str, cadence_text: str, command: str, size: str, catch_up: bool) -> dict[str, Any]:
        cadence = parse_cadence(cadence_text)
        if not command.strip():
            raise UserError('No command given: dynoctl scheduler:add "every 10 minutes" -- COMMAND...')
        if "\x00" in command or len(command.encode()) > MAX_COMMAND_BYTES:
            raise UserError(f"The command holds a NUL or is over {MAX_COMMAND_BYTES} bytes; put it in a script "
                            "in the app.")
        if len(self.store.jobs(app)) >= MAX_JOBS_PER_APP:
            raise UserError(f"{app} has {MAX_JOBS_PER_APP} scheduled jobs already: remove one first "
                            "(dynoctl scheduler:remove JOB).")
        job = self.store.add_job(app, cadence.text, command, size, catch_up, self.clock.now())
        self.emit(app, f"Scheduled job {job.id[:8]} added: {cadence.text}: {command}")
        self._changed.set()
        return self._job_json(job)

    def list_jobs(self, app: str) -> list[dict[str, Any]]:
        return [self._job_json(job) for job in self.store.jobs(app)]

    def remove_job(self, app: str, ref: str) -> dict[str, Any]:
        job = self._find(app, ref)
        self.store.remove_job(job.id)
        self.emit(app, f"Scheduled job {job.id[:8]} removed: {job.cadence}: {job.command}")
        self._changed.set()
        return self._job_json(job)

    def app_destroyed(self, app: str) -> None:
        """apps:destroy: its jobs and their runs go (a new app of the name starts with none)."""
        self.store.remove_app(app)
        self._changed.set()

    def _find(self, app: str, ref: str) -> Job:
        ref = ref.strip().lower()
        matches = [j for j in self.store.jobs(app) if j.id == ref or (len(ref) >= 4 and j.id.startswith(ref))]
        if len(matches) != 1:
            what = "No" if not matches else "More than one"
            raise NotFound(f"{what} scheduled job of {app} matches {ref[:40]!r}: see `dynoctl scheduler -a {app}` "
                           "for the ids.")
        return matches[0]

    def _cadence(self, job: Job) -> Cadence:
        cadence = self._cadences.get(job.cadence)
        if cadence is None:
            cadence = self._cadences[job.cadence] = parse_cadence(job.cadence)
        return cadence

    def _job_json(self, job: Job) -> dict[str, Any]:
        cadence = self._cadence(job)
        after = max(self.clock.now(), job.last_slot or job.created_at)
        runs = self.store.runs(job.id)
        last = runs[-1] if runs else None
        return {
            "id": job.id, "app": {"name": job.app}, "schedule": cadence.text, "cron": cadence.cron,
            "command": job.command, "size": job.size, "catch_up": job.catch_up,
            "next_run": _iso(self.clock.to_wall(cadence.next_after(after))),
            "last_run": None if last is None else {
                "slot": _iso(self.clock.to_wall(last.slot)), "dyno": last.dyno, "outcome": last.outcome},
        }

    def statistics(self) -> dict[str, int]:
        return {"jobs": len(self.store.jobs()), "started": self._started, "skipped": self._skipped,
                "failed": self._failed}

    # -- the clock's side ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for run in self.store.unstarted():
                    job = self.store.job(run.job_id)
                    self.store.record_run(run.job_id, run.slot, dyno=None, outcome="lost: dynod stopped before "
                                          "its dyno started")
                    if job is not None:
                        when = _iso(self.clock.to_wall(run.slot))
                        self.emit(job.app, f"Scheduled job {job.id[:8]}: the run for {when} was claimed but dynod "
                                           "stopped before its dyno started; it is not run again (a slot runs at "
                                           "most once)")
                # Runs started by an earlier dynod (adopted with the other dynos) keep their limit.
                for job in self.store.jobs():
                    for run in self.store.runs(job.id):
                        if run.outcome == "started" and run.dyno:
                            nursery.start_soon(self._limit, job, run.dyno, run.slot)
                task_status.started()
                while True:
                    wake = self.tick()
                    with trio.move_on_after(min(MAX_SLEEP, max(0.005, wake - self.clock.wall()))):
                        await self._changed.wait()
                    self._changed = trio.Event()
        finally:
            self._nursery = None

    def tick(self) -> float:
        """Claim and start every due slot; returns the wall time of the next slot of any job."""
        now = self.clock.now()
        next_slot = math.inf
        for job in self.store.jobs():
            cadence = self._cadence(job)
            due = due_slot(cadence, last_slot=job.last_slot, created_at=job.created_at, now=now,
                           catch_up=job.catch_up)
            if due.skipped is not None and self.store.claim(job.id, due.skipped, outcome="skipped"):
                self._skipped += 1
                self.emit(job.app, f"Scheduled job {job.id[:8]}: skipped the run for "
                                   f"{_iso(self.clock.to_wall(due.skipped))}, missed while dynod was down "
                                   "(catch-up is off for this job)")
            if due.slot is not None and self.store.claim(job.id, due.slot):
                assert self._nursery is not None
                self._nursery.start_soon(self._start, job, due.slot, due.missed)
            next_slot = min(next_slot, cadence.next_after(max(now, job.last_slot or job.created_at)))
        return self.clock.to_wall(next_slot) if next_slot < math.inf else math.inf

    async def _start(self, job: Job, slot: float, missed: bool) -> None:
        when = _iso(self.clock.to_wall(slot))
        late = " (missed while dynod was down: run once now)" if missed else ""
        try:
            dyno = await self.start_dyno(job.app, job.command, job.size)
        except UserError as exc:
            self._failed += 1
            self.store.record_run(job.id, slot, dyno=None, outcome=f"failed: {exc}")
            self.emit(job.app, f"Scheduled job {job.id[:8]}: the run for {when} did not start: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - one job's failure must not end the scheduler
            log.exception("scheduled job %s of %s", job.id, job.app)
            self._failed += 1
            self.store.record_run(job.id, slot, dyno=None, outcome=f"failed: {exc}")
            return
        self._started += 1
        self.store.record_run(job.id, slot, dyno=dyno["name"], outcome="started")
        self.emit(job.app, f"Scheduled job {job.id[:8]}: started {dyno['name']} for {when}{late}: {job.command}")
        await self._limit(job, dyno["name"], slot)

    async def _limit(self, job: Job, name: str, slot: float) -> None:
        """Heroku Scheduler: a run lasts at most its job's interval (a 10-minute job's dyno is
        stopped after about 10 minutes), so the runs of one job never pile up."""
        if self.stop_dyno is None:
            return
        cadence = self._cadence(job)
        end = self.clock.to_wall(cadence.next_after(slot))
        await trio.sleep(max(0.0, end - self.clock.wall()))
        try:
            await self.stop_dyno(job.app, name)
        except UserError:
            return  # it ended by itself
        limit = end - self.clock.to_wall(slot)
        self.emit(job.app, f"Scheduled job {job.id[:8]}: {name} ran past its interval ({limit:g} s): stopping it")
