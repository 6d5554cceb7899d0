"""The dyno manager: its public face and its state. It starts, watches, stops and re-adopts dynos.

The work is done in stages, one module each (docs/manager.md): the reconcile loop
(reconciling.py), start, cold and warm, with the warm pool (starting.py), watch: boot, memory,
OOM, metrics, exits (watching.py), stop with its deadlines (stopping.py) and adoption after a
dynod or spawner restart (adopting.py). The decisions they apply are pure and live beside them
(reconcile, restart policy, start back-off, memory policy, warm pool, cycling, sleep). The kernel
comes in through the seams of runtime.py. ``DynoManager`` owns the state the stages share (one
``LiveDyno`` per dyno it manages, live.py); the ledger holds their records, so that a restarted
dynod can find them again. The platform, the API, deploys, add-ons and builds use only its
methods.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from ..errors import NotFound
from ..ledger import Ledger
from ..linux.cgroups import CgroupBackend, CgroupLimits
from ..linux.net import Network
from ..linux.process import HostProcesses
from ..linux.spawn_messages import Exited
from ..linux.spawner_client import SpawnerError, SpawnerEvent
from ..model import DynoState, Release
from ..settings import Settings
from . import early_boot, health, sleeping
from .adopting import Adopting
from .early_boot import EarlyBoot
from .live import (
    DEFAULT_PATH,
    INIT,
    ONE_OFF_TYPE,
    PROFILE,
    LiveDyno,
    LogSink,
    SlugSource,
    StackSource,
    T,
    WarmDyno,
)
from .reconcile import Start
from .reconciling import ReconcileLoop
from .runtime import DynoNetwork, Processes, Spawner
from .start_backoff import StartBackoff
from .starting import Starting
from .stopping import Stopping
from .watching import Watching
from .web_routes import WebRoutes, web_routes

__all__ = ["DEFAULT_PATH", "INIT", "ONE_OFF_TYPE", "PROFILE", "DynoManager", "LiveDyno", "WarmDyno"]


class DynoManager:
    def __init__(self, settings: Settings, *, ledger: Ledger, spawner: Spawner, cgroups: CgroupBackend,
                 network: DynoNetwork, logs: LogSink, slugs: SlugSource, stacks: StackSource,
                 on_routes_changed: Callable[[], None] = lambda: None,
                 routes_flushed: Callable[[], Awaitable[None]] | None = None,
                 build_network: Network | None = None, processes: Processes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        # Wall-clock seconds: records, restart and back-off deadlines. Its waits are trio's own, so
        # a test runs both on trio's MockClock by handing in ``trio.current_time`` (plus an epoch).
        self.clock = clock
        self.processes: Processes = processes if processes is not None else HostProcesses()
        self.build_network = build_network  # builds' own bridge and subnet (dynod.builds.container)
        self.ledger = ledger
        self.spawner = spawner
        self.cgroups = cgroups
        self.network = network
        self.logs = logs
        self.slugs = slugs
        self.stacks = stacks
        self.on_routes_changed = on_routes_changed
        self.routes_flushed = routes_flushed
        self.live: dict[str, LiveDyno] = {}
        # Add-ons' hooks (dynod.addons): a dyno's address is admitted to its app's add-ons before
        # the dyno may run, and taken out again when the address is given back.
        self.address_claimed: Callable[[str, str], Awaitable[None]] | None = None
        self.address_released: Callable[[str | None], None] | None = None
        self.restart_at: dict[str, float] = {}  # crashed dyno id -> when it may start again
        # Web dynos of preboot apps that ps:restart or cycling asked to replace: each stays up until
        # every web slot of its app has a fresh dyno up (reconcile's ``replacing``).
        self.replacing: set[str] = set()
        self.crashes: dict[tuple[str, str], list[float]] = {}  # (app, dyno name) -> crash times
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._rng = random.Random()
        self._reconcile_lock = trio.Lock()
        self.mnt = str(settings.run_dir / "mnt")
        self._task_exits: dict[str, trio.MemorySendChannel[Exited]] = {}
        # ps:exec sessions (dynod.manager.exec): their spawner events, started and exited.
        self.exec_events: dict[str, trio.MemorySendChannel[SpawnerEvent]] = {}
        self.closing = False  # set by stop_all: nothing starts any more
        self.retiring: set[str] = set()  # apps being destroyed: their dynos stop, none start
        self._starting: set[tuple[str, str]] = set()  # (app, dyno name) being made right now
        # A start that fails (a broken slug, no addresses left) waits 1, 2, 4 ... 60 s before the
        # slot's next try instead of spinning (manager/start_backoff.py); by (app, dyno name).
        self._start_backoff: StartBackoff[tuple[str, str]] = StartBackoff()
        # Early boot (early_boot.py): a deploy's dynos booted from its tree before its release,
        # by id (their spawner events), and the boot of each app whose deploy is packing.
        self.early: dict[str, LiveDyno] = {}
        self.early_boots: dict[str, EarlyBoot] = {}
        self._warm: list[WarmDyno] = []
        self._unpacked: dict[str, Path] = {}  # slug id -> its unpacked dir
        self._stack_path: Path | None = None
        self._warm_filling = 0
        self._warm_changed = trio.Event()
        self.health_checks = health.HealthChecks(settings.state_dir / "health-checks")
        self.sleep = sleeping.SleepState(settings.state_dir / "sleeping.json",
                                         idle_after=settings.dynos.eco_idle_minutes * 60)
        # The stages: each does one part of the work on the state above.
        self.reconciling = ReconcileLoop(self)
        self.starting = Starting(self)
        self.watching = Watching(self)
        self.stopping = Stopping(self)
        self.adopting = Adopting(self)

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        os.makedirs(self.mnt, exist_ok=True)
        await self.network.ensure_bridge()
        if self.build_network is not None:
            await self.build_network.check_subnet()  # made at the first build; refused now, not then
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.adopting.adopt()
            nursery.start_soon(self.watching.events)
            nursery.start_soon(self.watching.metrics)
            nursery.start_soon(self.watching.sample_load)
            task_status.started()
            # Timed before any start or warm dyno: their moves would make the join look cheap on a
            # host where it is not (a reboot's first pass starts every dyno at once). A scale
            # request meanwhile waits for it in _wake (~0.5 s, once per dynod start).
            try:
                await self.starting.probe_joins()
                nursery.start_soon(self.starting.keep_warm)
                self._wake.set()  # reconcile at once: the formation may have changed while dynod was down
                while True:
                    with trio.move_on_after(self._next_deadline()):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    await self.reconcile_all()
            finally:
                self.starting.close_primer()  # dynod stops and leaves its dynos running

    def wake(self) -> None:
        self._wake.set()

    def _next_deadline(self) -> float:
        now = self.clock()
        soonest = min([*self.restart_at.values(), *self._start_backoff.deadlines(),
                       *(d.cycle_at for d in self.live.values() if not d.stopping),
                       *self.reconciling.sleep_deadlines(now), now + 60])
        return max(0.0, soonest - now)

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "DynoManager.run() is not running"
        return self._nursery

    # -- intents: what the platform, deploys and add-ons ask of the manager ----------------------
    # They never write the manager's attributes: each request is one of these methods.
    @contextlib.contextmanager
    def retiring_app(self, app: str) -> Iterator[None]:
        """While the app is destroyed: its dynos may stop, and none of them starts again."""
        self.retiring.add(app)
        try:
            yield
        finally:
            self.retiring.discard(app)

    def forget_restarts(self, app: str) -> None:
        """Drop the pending restarts of the app's crashed dynos (it is going away)."""
        for record in self.ledger.list_dynos(app):
            self.restart_at.pop(record.id, None)

    def restart_crashed_now(self, app: str, target: str | None = None) -> None:
        """Crashed dynos waiting out a cool-off (all, or those of one name or type) start at once."""
        now = self.clock()
        for record in self.ledger.list_dynos(app, state=DynoState.CRASHED):
            if target is None or target in (record.name, record.type):
                self.restart_at[record.id] = now
        self.wake()

    def stop_soon(self, live: LiveDyno, reason: str) -> None:
        """Stop a dyno in the background (SIGTERM, the stop timeout, then SIGKILL)."""
        self.nursery.start_soon(self.stop, live, reason)

    def start_soon(self, task: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run a task for as long as the manager runs (a release phase, an add-on refresh)."""
        self.nursery.start_soon(task, *args)

    # -- the stages' public methods: the reconcile loop ----------------------------------------------
    async def reconcile_all(self) -> None:
        await self.reconciling.reconcile_all()

    async def reconcile_app(self, app: str) -> None:
        await self.reconciling.reconcile_app(app)

    def restart(self, live: LiveDyno, reason: str = "restart") -> None:
        """ps:restart and daily cycling (new-before-old under preboot)."""
        self.reconciling.restart(live, reason)

    def request_seen(self, app: str) -> None:
        """The router logged a request for ``app``: its idle time starts again."""
        self.reconciling.request_seen(app)

    def wake_app(self, app: str) -> None:
        """A request came for a sleeping app (or its formation changed): its dynos start again."""
        self.reconciling.wake_app(app)

    def is_sleeping(self, app: str) -> bool:
        return self.reconciling.is_sleeping(app)

    # -- start -----------------------------------------------------------------------------------
    def environment(self, release: Release, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        return self.starting.environment(release, name, extra)

    async def start(self, app: str, type: str, name: str, release: Release, size: str, command: str, *,
                    stdio: str = "log", extra_env: dict[str, str] | None = None, rows: int = 24,
                    cols: int = 80, attached: bool = False) -> LiveDyno:
        return await self.starting.start(app, type, name, release, size, command, stdio=stdio,
                                         extra_env=extra_env, rows=rows, cols=cols, attached=attached)

    def boot_early(self, app: str, slug_dir: Path, process_types: dict[str, str]) -> EarlyBoot | None:
        """A deploy's dynos booted from its build's tree (``slug_dir``, holding app/) while the slug
        packs, with the config as it is now; None when none may (early_boot.early_slots). The
        deploy says ``packed`` once the slug is stored, ``settle`` after its release, or ``end``."""
        slots = early_boot.early_slots(self, app, process_types)
        if not slots or app in self.early_boots:
            return None
        current = self.ledger.current_release(app)
        release = Release(app=app, version=early_boot.EARLY_RELEASE, slug_id=None,
                          config=dict(current.config) if current else {}, description="early boot",
                          created_at=self.clock(), process_types=dict(process_types))
        boot = early_boot.EarlyBoot(self, app, slug_dir, release, slots)
        self.early_boots[app] = boot
        self.nursery.start_soon(boot.boot)
        return boot

    def take_early(self, app: str, action: Start, release: Release) -> bool:
        """Whether an early dyno of the app's deploy took ``action``'s slot of ``release``: it is a
        dyno of that release from now on (the reconcile pass then starts none there)."""
        boot = self.early_boots.get(app)
        live = boot.take(action, release) if boot is not None else None
        if live is None:
            return False
        early_boot.adopt(self, live, release)
        return True

    def forget_stack(self) -> None:
        """The stack was rebuilt: look it up again for the next dyno."""
        self.starting.forget_stack()

    async def run_container(self, spec: dict[str, Any], limits: CgroupLimits, *, output: Callable[[bytes], None],
                            timeout: float, attach: Callable[[int], Awaitable[object]] | None = None) -> int | None:
        """Run one container to its end (a build step); None if ``timeout`` passed and it was killed."""
        return await self.starting.run_container(spec, limits, output=output, timeout=timeout, attach=attach)

    # -- stop ------------------------------------------------------------------------------------
    async def stop(self, live: LiveDyno, reason: str = "") -> int | None:
        """Heroku's stop: SIGTERM to every process, a grace period, then SIGKILL."""
        return await self.stopping.stop(live, reason)

    async def kill(self, live: LiveDyno, why: str) -> None:
        """dynod's own kill (R10, R15): the dyno counts as crashed and is restarted."""
        await self.stopping.kill(live, why)

    async def stop_all(self) -> None:
        await self.stopping.stop_all()

    # -- adopt -----------------------------------------------------------------------------------
    async def spawner_replaced(self, spawner: Spawner) -> None:
        """The spawner died and ``spawner`` is its successor, already running (adopting.py)."""
        await self.adopting.spawner_replaced(spawner)

    # -- what the stages share -------------------------------------------------------------------
    def _set_state(self, live: LiveDyno, state: DynoState) -> None:
        old = live.record.state
        if old == state:
            return
        live.record = replace(live.record, state=state, state_changed_at=self.clock())
        try:
            self.ledger.set_dyno_state(live.id, state, pid=live.record.pid, exit_status=live.exit_status)
        except NotFound:
            pass  # its app was destroyed meanwhile: the record went with it
        if not live.record.attached:
            self.emit(live, f"State changed from {old} to {state}")
        if live.record.type == "web":
            self.on_routes_changed()
            if state == DynoState.UP:
                self.wake()  # preboot: the old web dynos may go once every new one is up

    def emit(self, live: LiveDyno, message: str) -> None:
        self.logs.emit(live.app, "dynod", live.name, message)

    def reset_crashes(self, app: str) -> None:
        """A new release wipes the crash history (Heroku: a deploy resets the cool-off)."""
        for key in [k for k in self.crashes if k[0] == app]:
            del self.crashes[key]
        for record in self.ledger.list_dynos(app):
            self.restart_at.pop(record.id, None)

    # -- the spawner: asked, lost, replaced ------------------------------------------------------
    async def _ask(self, request: Callable[[Spawner], Awaitable[T]]) -> T:
        """A request the spawner answers; SpawnerError if it dies first (its answer would never come)."""
        spawner = self.spawner
        answer: list[T] = []
        failed: list[Exception] = []
        async with trio.open_nursery() as nursery:
            async def ask() -> None:
                try:
                    answer.append(await request(spawner))
                except Exception as exc:  # raised below as itself: out of the nursery it would be an
                    failed.append(exc)  # ExceptionGroup that no caller's `except SpawnerError` takes
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                await spawner.closed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(ask)
            nursery.start_soon(watch)
        if failed:
            raise failed[0]
        if not answer:
            raise SpawnerError("the spawner went away before it answered")
        return answer[0]

    # -- queries -----------------------------------------------------------------------------
    def dynos_of(self, app: str) -> list[LiveDyno]:
        return [d for d in self.live.values() if d.app == app]

    def web_routes(self, app: str) -> WebRoutes:
        """The app's web dynos the router may use now, and what it answers when there are none."""
        release = self.ledger.current_release(app)
        wanted = 0
        if release is not None and "web" in release.process_types:
            wanted = sum(f.quantity for f in self.ledger.get_formation(app) if f.type == "web")
        web = [d for d in self.live.values() if d.app == app and d.record.type == "web"]
        leaving = {d.id for d in web if d.stopping}
        crashed = [r for r in self.ledger.list_dynos(app, state=DynoState.CRASHED) if r.type == "web"]
        return web_routes([d.record for d in web], wanted=wanted, leaving=leaving, crashed=crashed)

    def find(self, app: str, name: str) -> LiveDyno | None:
        for live in self.live.values():
            if live.app == app and live.name == name and not live.stopping:
                return live
        return None

    def statistics(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for live in self.live.values():
            states[str(live.record.state)] = states.get(str(live.record.state), 0) + 1
        return {"dynos": len(self.live), "states": states, "pending_restarts": len(self.restart_at),
                "addresses": self.network.pool.statistics()}
