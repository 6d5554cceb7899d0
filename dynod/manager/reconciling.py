"""The reconcile stage: the loop's pass over every app, which turns reconcile's actions (pure,
reconcile.py) into starts and stops, with the start-failure back-off (start_backoff.py), daily
cycling (cycling.py) and eco sleep (sleeping.py) folded in. ``DynoManager.run`` calls it whenever
something changed and at the next deadline.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import NotFound, UserError
from ..linux.spawner_client import SpawnerError
from ..model import DynoState, Release
from . import sleeping
from .features import PREBOOT
from .live import LiveDyno, log
from .reconcile import Start, Stop, is_one_off, reconcile

if TYPE_CHECKING:
    from .dynos import DynoManager


class ReconcileLoop:
    def __init__(self, manager: DynoManager) -> None:
        self.m = manager

    async def reconcile_all(self) -> None:
        async with self.m._reconcile_lock:
            if self.m.closing:
                return
            now = self.m.clock()
            for dyno in list(self.m.live.values()):
                if dyno.cycle_at <= now and not dyno.stopping:
                    dyno.cycle_at = math.inf
                    self.m.emit(dyno, "Cycling")
                    self.restart(dyno, "cycling")
            apps = self.m.ledger.list_apps()
            self.m.sleep.forget({a.name for a in apps})
            # One pass over the live dynos for every app (not one per app: 1,000 dynos in 10 apps
            # made that 10,000 steps on each wake).
            by_app: dict[str, list[LiveDyno]] = {}
            for live in self.m.live.values():
                by_app.setdefault(live.app, []).append(live)
            for app in apps:
                if app.name in self.m.retiring:
                    continue
                self.sleep_if_idle(app.name, now)
                try:
                    await self.reconcile_app(app.name, by_app.get(app.name, []))
                except UserError as exc:
                    log.warning("reconcile %s: %s", app.name, exc)

    async def reconcile_app(self, app: str, live: list[LiveDyno] | None = None) -> None:
        """One app's pass; ``live`` is its live dynos when the caller has them grouped already."""
        release = self.m.ledger.current_release(app)
        formation = self.m.ledger.get_formation(app)
        if app in self.m.sleep.sleeping:
            formation = sleeping.asleep(formation)  # its web and worker dynos sleep; one-offs go on
        if live is None:
            live = self.m.dynos_of(app)
        # A dyno on its way down is no longer part of the formation: its replacement starts now.
        records = [d.record for d in live if not d.stopping]
        records += [r for r in self.m.ledger.list_dynos(app, state=DynoState.CRASHED) if r.id not in self.m.live]
        preboot = PREBOOT in self.m.ledger.list_features(app)
        actions = reconcile(formation, release, records, now=self.m.clock(), restart_at=self.m.restart_at,
                            preboot=preboot, replacing=self.m.replacing)
        for action in actions:
            if isinstance(action, Stop):
                live = self.m.live.get(action.dyno_id)
                if live is not None:
                    self.m.nursery.start_soon(self.m.stop, live, action.reason)
                else:
                    self.forget_record(action.dyno_id)
            elif isinstance(action, Start) and release is not None:
                if (app, action.name) in self.m._starting:
                    continue  # its dyno is being made: the slot is taken
                if self.m._start_backoff.waiting((app, action.name), self.m.clock()):
                    continue  # its last start failed: wait out the back-off
                replaced = [r for r in records if r.name == action.name and r.id not in self.m.live]
                for old in replaced:
                    self.forget_record(old.id)  # the crashed record this start replaces
                if replaced:
                    self.m.logs.emit(app, "dynod", action.name, "State changed from crashed to starting")
                if self.m.take_early(app, action, release):  # booted from this release's tree meanwhile
                    continue
                self.m._starting.add((app, action.name))  # taken now, before the task gets to run
                self.m.nursery.start_soon(self.start_logged, app, action, release)

    def restart(self, live: LiveDyno, reason: str = "restart") -> None:
        """ps:restart and daily cycling. With preboot a formation web dyno is replaced new-before-old
        (it serves until every web slot has a fresh dyno up); otherwise it stops now and its slot
        starts again at once, as on Heroku."""
        if (live.record.type == "web" and not is_one_off(live.record)
                and PREBOOT in self.m.ledger.list_features(live.app)):
            self.m.replacing.add(live.id)
            self.m.wake()
        else:
            self.m.nursery.start_soon(self.m.stop, live, reason)

    def request_seen(self, app: str) -> None:
        """The router logged a request for ``app``: its idle time starts again."""
        self.m.sleep.request_seen(app, self.m.clock())

    def wake_app(self, app: str) -> None:
        """A request came for a sleeping app (or its formation changed): its dynos start again; the
        router holds the request until a web dyno is up."""
        if not self.m.sleep.wake(app, self.m.clock()):
            return
        for f in self.m.ledger.get_formation(app):
            if f.quantity > 0:
                for index in range(1, f.quantity + 1):
                    self.m.logs.emit(app, "dynod", f"{f.type}.{index}", "Unidling")
        self.m.on_routes_changed()  # no longer asleep: the router holds requests as for a boot
        self.m.wake()

    def is_sleeping(self, app: str) -> bool:
        return app in self.m.sleep.sleeping

    def sleep_if_idle(self, app: str, now: float) -> None:
        if app in self.m.sleep.sleeping:
            return
        formation = self.m.ledger.get_formation(app)
        if not sleeping.should_sleep(formation, last_request_at=self.m.sleep.last_request_at(app, now), now=now,
                                     idle_after=self.m.sleep.idle_after):
            return
        self.m.sleep.fall_asleep(app, now)
        self.m.on_routes_changed()  # before the stops: the router holds and wakes from now on, never H14
        for live in self.m.dynos_of(app):
            if not live.stopping and not is_one_off(live.record):
                self.m.emit(live, "Idling")
                self.m.nursery.start_soon(self.m.stop, live, "idling")

    def sleep_deadlines(self, now: float) -> list[float]:
        deadlines: list[float] = []
        if self.m.closing:
            return deadlines  # nothing falls asleep any more: no deadline to wake the loop for
        for app in list(self.m.sleep.last_request):
            if app in self.m.sleep.sleeping or app in self.m.retiring:
                continue  # a retiring app is never put to sleep: its deadline would spin the loop
            try:
                formation = self.m.ledger.get_formation(app)
            except NotFound:
                continue  # destroyed since: forgotten on the next pass
            at = sleeping.sleep_at(formation, last_request_at=self.m.sleep.last_request[app],
                                   idle_after=self.m.sleep.idle_after)
            if at is not None:
                deadlines.append(at)
        return deadlines

    def forget_record(self, dyno_id: str) -> None:
        self.m.restart_at.pop(dyno_id, None)
        self.m.ledger.delete_dyno(dyno_id)  # idempotent: a destroyed app's records are gone already

    async def start_logged(self, app: str, action: Start, release: Release) -> None:
        slot = (app, action.name)
        try:
            await self.m.start(app, action.type, action.name, release, action.size, action.command)
            self.m._start_backoff.succeeded(slot)
        except (UserError, SpawnerError, OSError) as exc:
            self.m._start_backoff.failed(slot, self.m.clock())
            if app in self.m.retiring or isinstance(exc, NotFound):
                return  # the app went away while its dyno was being made
            self.m.logs.emit(app, "dynod", action.name, f"Error: the dyno could not start: {exc}")
            log.warning("start %s %s: %s", app, action.name, exc)
        finally:
            self.m._starting.discard(slot)
            self.m.wake()  # the slot is settled either way: look again
