"""The dyno manager's moving part: starts, watches, stops and re-adopts dynos.

The decisions are pure and live beside this module (reconcile, restart policy, cycling); this
one carries them out against the kernel (through dynod.linux) and reports what happened in
Heroku's words to the log stream. It holds one ``LiveDyno`` per dyno it manages; the ledger holds
their records so that a restarted dynod can find them again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import random
import secrets
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from ..errors import NotFound, UserError
from ..ledger import Ledger
from ..linux.cgroups import CgroupBackend, CgroupLimits, DynoCgroup, MemoryWatch
from ..linux.cgroups.paths import CgroupMounts, read_mounts
from ..linux.idmap import app_identity
from ..linux.load import runnable_tasks
from ..linux.net import DYNO_IFNAME, Network
from ..linux.seccomp import seccomp_profile
from ..linux.spawner_client import AdoptedDyno, SpawnerClient, SpawnerError, SpawnerEvent
from ..logplex.metrics import format_sample, r14_line, r15_line
from ..model import DynoRecord, DynoState, MiB, Release, dyno_size
from ..settings import Settings
from . import cycling, health, recorded_cgroup, restart_policy, sleeping
from .features import PREBOOT
from .load_average import SAMPLE_EVERY, LoadAverage
from .reconcile import Start, Stop, is_one_off, reconcile
from .web_routes import WebRoutes, web_routes

log = logging.getLogger("dynod.manager")
T = TypeVar("T")
SPAWNER_LOST = "the spawner went away during the build"

ONE_OFF_TYPE = "run"
ROUTES_SETTLE = 0.2  # seconds for the router's workers to apply a route change
DEFAULT_PATH = "/app/.heroku/python/bin:/app/.heroku/node/bin:/app/bin:/usr/local/bin:/usr/bin:/bin"
# Heroku sources .profile.d scripts, then .profile, then runs the command, all in one bash.
PROFILE = (
    'for f in /app/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; unset f; '
    "[ -r /app/.profile ] && . /app/.profile; "
)
INIT = ["/usr/bin/tini", "-g", "--"]


class LogSink(Protocol):
    def emit(self, app: str, source: str, dyno: str, message: str, *, at: float | None = None) -> None: ...
    async def pump(self, app: str, dyno: str, fd: int) -> None: ...


class SlugSource(Protocol):
    def unpacked(self, slug_id: str, uid: int, gid: int) -> Path: ...


class StackSource(Protocol):
    def ensure(self, name: str, progress: Callable[[str], None]) -> Path: ...


@dataclass(eq=False)
class LiveDyno:
    record: DynoRecord
    cgroup: DynoCgroup | None
    fds: dict[str, int]
    exited: trio.Event = field(default_factory=trio.Event)
    started: trio.Event = field(default_factory=trio.Event)
    exit_status: int | None = None
    stopping: bool = False
    killed_for: str = ""  # "R10", "R15": why dynod killed it, when it did
    cycle_at: float = math.inf
    oom_kills: int = 0
    last_r14: float = 0.0
    load: LoadAverage = field(default_factory=LoadAverage)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def app(self) -> str:
        return self.record.app

    @property
    def name(self) -> str:
        return self.record.name


# A warm dyno's limits until it is taken: what its idle Python fork needs, no more.
WARM_LIMITS = CgroupLimits(memory_max=256 * MiB, memory_high=256 * MiB, pids_max=16, cpu_weight=100)


@dataclass(eq=False)
class WarmDyno:
    pool_id: str
    pid: int
    address: str
    cgroup: DynoCgroup


class DynoManager:
    def __init__(self, settings: Settings, *, ledger: Ledger, spawner: SpawnerClient, cgroups: CgroupBackend,
                 network: Network, logs: LogSink, slugs: SlugSource, stacks: StackSource,
                 on_routes_changed: Callable[[], None] = lambda: None,
                 routes_flushed: Callable[[], Awaitable[None]] | None = None,
                 build_network: Network | None = None) -> None:
        self.settings = settings
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
        self._task_exits: dict[str, trio.MemorySendChannel[SpawnerEvent]] = {}
        # ps:exec sessions (dynod.manager.exec): their spawner events, started and exited.
        self.exec_events: dict[str, trio.MemorySendChannel[SpawnerEvent]] = {}
        self.closing = False  # set by stop_all: nothing starts any more
        self.retiring: set[str] = set()  # apps being destroyed: their dynos stop, none start
        self._starting: set[tuple[str, str]] = set()  # (app, dyno name) being made right now
        # (app, dyno name) -> (not before, failures in a row): a start that fails (a broken slug,
        # no addresses left) waits 1, 2, 4 ... 60 s before the next try instead of spinning.
        self._start_failed: dict[tuple[str, str], tuple[float, int]] = {}
        self._warm: list[WarmDyno] = []
        self._unpacked: dict[str, Path] = {}  # slug id -> its unpacked dir
        self._stack_path: Path | None = None
        self._warm_filling = 0
        self._warm_changed = trio.Event()
        self.health_checks = health.HealthChecks(settings.state_dir / "health-checks")
        self.sleep = sleeping.SleepState(settings.state_dir / "sleeping.json",
                                         idle_after=settings.dynos.eco_idle_minutes * 60)

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        os.makedirs(self.mnt, exist_ok=True)
        await self.network.ensure_bridge()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._adopt()
            nursery.start_soon(self._events)
            nursery.start_soon(self._metrics)
            nursery.start_soon(self._sample_load)
            nursery.start_soon(self._keep_warm)
            task_status.started()
            self._wake.set()  # reconcile at once: the formation may have changed while dynod was down
            while True:
                with trio.move_on_after(self._next_deadline()):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self.reconcile_all()

    def wake(self) -> None:
        self._wake.set()

    def _next_deadline(self) -> float:
        now = time.time()
        soonest = min([*self.restart_at.values(), *(until for until, _ in self._start_failed.values()),
                       *(d.cycle_at for d in self.live.values() if not d.stopping), *self._sleep_deadlines(now),
                       now + 60])
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
        now = time.time()
        for record in self.ledger.list_dynos(app):
            if record.state == DynoState.CRASHED and (target is None or target in (record.name, record.type)):
                self.restart_at[record.id] = now
        self.wake()

    def stop_soon(self, live: LiveDyno, reason: str) -> None:
        """Stop a dyno in the background (SIGTERM, the stop timeout, then SIGKILL)."""
        self.nursery.start_soon(self.stop, live, reason)

    def start_soon(self, task: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run a task for as long as the manager runs (a release phase, an add-on refresh)."""
        self.nursery.start_soon(task, *args)

    # -- reconcile ---------------------------------------------------------------------------
    async def reconcile_all(self) -> None:
        async with self._reconcile_lock:
            if self.closing:
                return
            now = time.time()
            for dyno in list(self.live.values()):
                if dyno.cycle_at <= now and not dyno.stopping:
                    dyno.cycle_at = math.inf
                    self.emit(dyno, "Cycling")
                    self.restart(dyno, "cycling")
            apps = self.ledger.list_apps()
            self.sleep.forget({a.name for a in apps})
            for app in apps:
                if app.name in self.retiring:
                    continue
                self._sleep_if_idle(app.name, now)
                try:
                    await self.reconcile_app(app.name)
                except UserError as exc:
                    log.warning("reconcile %s: %s", app.name, exc)

    async def reconcile_app(self, app: str) -> None:
        release = self.ledger.current_release(app)
        formation = self.ledger.get_formation(app)
        if app in self.sleep.sleeping:
            formation = sleeping.asleep(formation)  # its web and worker dynos sleep; one-offs go on
        # A dyno on its way down is no longer part of the formation: its replacement starts now.
        records = [d.record for d in self.live.values() if d.app == app and not d.stopping]
        records += [r for r in self.ledger.list_dynos(app) if r.state == DynoState.CRASHED and r.id not in self.live]
        preboot = PREBOOT in self.ledger.list_features(app)
        actions = reconcile(formation, release, records, now=time.time(), restart_at=self.restart_at,
                            preboot=preboot, replacing=self.replacing)
        for action in actions:
            if isinstance(action, Stop):
                live = self.live.get(action.dyno_id)
                if live is not None:
                    self.nursery.start_soon(self.stop, live, action.reason)
                else:
                    self._forget_record(action.dyno_id)
            elif isinstance(action, Start) and release is not None:
                if (app, action.name) in self._starting:
                    continue  # its dyno is being made: the slot is taken
                if self._start_failed.get((app, action.name), (0.0, 0))[0] > time.time():
                    continue  # its last start failed: wait out the back-off
                replaced = [r for r in records if r.name == action.name and r.id not in self.live]
                for old in replaced:
                    self._forget_record(old.id)  # the crashed record this start replaces
                if replaced:
                    self.logs.emit(app, "dynod", action.name, "State changed from crashed to starting")
                self._starting.add((app, action.name))  # taken now, before the task gets to run
                self.nursery.start_soon(self._start_logged, app, action, release)

    def restart(self, live: LiveDyno, reason: str = "restart") -> None:
        """ps:restart and daily cycling. With preboot a formation web dyno is replaced new-before-old
        (it serves until every web slot has a fresh dyno up); otherwise it stops now and its slot
        starts again at once, as on Heroku."""
        if (live.record.type == "web" and not is_one_off(live.record)
                and PREBOOT in self.ledger.list_features(live.app)):
            self.replacing.add(live.id)
            self.wake()
        else:
            self.nursery.start_soon(self.stop, live, reason)

    # -- eco dynos sleep (manager/sleeping.py) ---------------------------------------------------
    def request_seen(self, app: str) -> None:
        """The router logged a request for ``app``: its idle time starts again."""
        self.sleep.request_seen(app, time.time())

    def wake_app(self, app: str) -> None:
        """A request came for a sleeping app (or its formation changed): its dynos start again; the
        router holds the request until a web dyno is up."""
        if not self.sleep.wake(app, time.time()):
            return
        for f in self.ledger.get_formation(app):
            if f.quantity > 0:
                for index in range(1, f.quantity + 1):
                    self.logs.emit(app, "dynod", f"{f.type}.{index}", "Unidling")
        self.on_routes_changed()  # no longer asleep: the router holds requests as for a boot
        self.wake()

    def is_sleeping(self, app: str) -> bool:
        return app in self.sleep.sleeping

    def _sleep_if_idle(self, app: str, now: float) -> None:
        if app in self.sleep.sleeping:
            return
        formation = self.ledger.get_formation(app)
        if not sleeping.should_sleep(formation, last_request_at=self.sleep.last_request_at(app, now), now=now,
                                     idle_after=self.sleep.idle_after):
            return
        self.sleep.fall_asleep(app, now)
        self.on_routes_changed()  # before the stops: the router holds and wakes from now on, never H14
        for live in self.dynos_of(app):
            if not live.stopping and not is_one_off(live.record):
                self.emit(live, "Idling")
                self.nursery.start_soon(self.stop, live, "idling")

    def _sleep_deadlines(self, now: float) -> list[float]:
        deadlines: list[float] = []
        if self.closing:
            return deadlines  # nothing falls asleep any more: no deadline to wake the loop for
        for app in list(self.sleep.last_request):
            if app in self.sleep.sleeping or app in self.retiring:
                continue  # a retiring app is never put to sleep: its deadline would spin the loop
            try:
                formation = self.ledger.get_formation(app)
            except NotFound:
                continue  # destroyed since: forgotten on the next pass
            at = sleeping.sleep_at(formation, last_request_at=self.sleep.last_request[app],
                                   idle_after=self.sleep.idle_after)
            if at is not None:
                deadlines.append(at)
        return deadlines

    def _forget_record(self, dyno_id: str) -> None:
        self.restart_at.pop(dyno_id, None)
        self.ledger.delete_dyno(dyno_id)  # idempotent: a destroyed app's records are gone already

    async def _start_logged(self, app: str, action: Start, release: Release) -> None:
        slot = (app, action.name)
        try:
            await self.start(app, action.type, action.name, release, action.size, action.command)
            self._start_failed.pop(slot, None)
        except (UserError, SpawnerError, OSError) as exc:
            _, failures = self._start_failed.get(slot, (0.0, 0))
            self._start_failed[slot] = (time.time() + min(60.0, 2.0 ** failures), failures + 1)
            if app in self.retiring or isinstance(exc, NotFound):
                return  # the app went away while its dyno was being made
            self.logs.emit(app, "dynod", action.name, f"Error: the dyno could not start: {exc}")
            log.warning("start %s %s: %s", app, action.name, exc)
        finally:
            self._starting.discard(slot)
            self.wake()  # the slot is settled either way: look again

    def environment(self, release: Release, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "STACK": self.settings.stack}
        env.update(release.config)
        env.update(extra or {})
        env.update({"HOME": "/app", "PORT": str(self.settings.dynos.port), "DYNO": name})
        return env

    async def start(self, app: str, type: str, name: str, release: Release, size: str, command: str, *,
                    stdio: str = "log", extra_env: dict[str, str] | None = None, rows: int = 24,
                    cols: int = 80, attached: bool = False) -> LiveDyno:
        if self.closing:
            raise UserError("dynod is shutting down: no new dynos start; try again once it is back.")
        if app in self.retiring:
            raise UserError(f"{app} is being destroyed: no new dynos start.")
        if release.slug_id is None:
            raise UserError(f"{app} has no slug yet: deploy it first (dynoctl deploy DIR -a {app}).")
        spec_size = dyno_size(size)
        stages = [("begin", time.perf_counter())]
        uid, gid = self.settings.dynos.uid, self.settings.dynos.gid
        slug_dir = await self._slug_dir(release.slug_id, uid, gid)
        stack = await self._stack(app)
        stages.append(("slug+stack", time.perf_counter()))
        dyno_id = f"{app}.{name}.{secrets.token_hex(3)}"
        quota = spec_size.memory_mb * MiB
        limits = CgroupLimits(memory_max=int(quota * self.settings.dynos.hard_limit_ratio), memory_high=quota,
                              pids_max=min(spec_size.pids, self.settings.dynos.pids_max),
                              cpu_weight=spec_size.cpu_weight)
        warm = self._take_warm() if stdio == "log" else None
        if warm is not None:
            try:
                cgroup = self.cgroups.rename(warm.cgroup, dyno_id, limits)
            except OSError as exc:
                log.warning("warm dyno %s unusable (%s): starting cold", warm.pool_id, exc)
                self.nursery.start_soon(self._discard_warm, warm)
                warm = None
        if warm is None:
            cgroup = self.cgroups.create(dyno_id, limits)
            address = self.network.pool.allocate()
        else:
            address = warm.address
        now = time.time()
        record = DynoRecord(id=dyno_id, app=app, name=name, type=type, release=release.version,
                            size=spec_size.name, command=command, state=DynoState.STARTING, pid=None,
                            ip=address, port=self.settings.dynos.port, created_at=now,
                            state_changed_at=now, attached=attached, cgroup=recorded_cgroup.describe(cgroup))
        spec: dict[str, Any] = {
            "id": dyno_id, "hostname": str(uuid.uuid4()),
            "argv": [*INIT, "/bin/bash", "-c", PROFILE + command],
            "env": self.environment(release, name, extra_env),
            "lower": [str(slug_dir), str(stack)], "mnt": self.mnt,
            "cgroup_procs": [],  # dynod moves it: see _wire
            **app_identity(self.settings, self.ledger.app_uid(app, self.settings.dynos.uid_first,
                                                              self.settings.dynos.uid_count)),
            "tmpfs_mb": self.settings.dynos.tmpfs_size_mb,
            "net": {"ifname": DYNO_IFNAME, "address": address, "prefix": self.network.pool.prefix,
                    "gateway": self.network.pool.gateway},
            "stdio": stdio, "rows": rows, "cols": cols,
            "seccomp": seccomp_profile(self.settings, app),
        }
        stages.append(("cgroup", time.perf_counter()))
        try:
            self.ledger.put_dyno(record)
            stages.append(("ledger", time.perf_counter()))
            if warm is not None:
                try:
                    spawned = await self._ask(lambda spawner: spawner.assign(warm.pool_id, spec))
                except SpawnerError as exc:
                    # It died in the pool an instant ago: give its group and address back, go cold.
                    log.warning("warm dyno %s unusable (%s): starting %s cold", warm.pool_id, exc, dyno_id)
                    await self._discard_warm(WarmDyno(warm.pool_id, warm.pid, address, cgroup))
                    warm = None
                    cgroup = self.cgroups.create(dyno_id, limits)
                    address = self.network.pool.allocate()
                    record = replace(record, ip=address, cgroup=recorded_cgroup.describe(cgroup))
                    spec["net"]["address"] = address
                    self.ledger.put_dyno(record)
            if warm is None:
                spawned = await self._ask(lambda spawner: spawner.spawn(spec))
            stages.append(("spawn", time.perf_counter()))
        except BaseException:
            self.ledger.delete_dyno(dyno_id)
            if warm is not None:
                warm.cgroup = cgroup
                self.nursery.start_soon(self._discard_warm, warm)
            else:
                self.network.pool.release(address)
                cgroup.remove()
            raise
        live = LiveDyno(replace(record, pid=spawned.pid), cgroup, spawned.fds)
        self.live[dyno_id] = live
        try:
            self.ledger.set_dyno_state(dyno_id, DynoState.STARTING, pid=spawned.pid)
            orphaned = False
        except NotFound:
            orphaned = True  # its app was destroyed while it was being made: stop it once it runs
        if warm is None:  # a warm dyno was moved and wired while nobody waited
            try:
                await self._wire(address, spawned.pid, cgroup, network=True)
            except BaseException:
                with trio.CancelScope(shield=True):  # even when cancelled: never leave it waiting
                    await self.spawner.abort(dyno_id)  # the child exits; _on_exit cleans up
                raise
        stages.append(("wire", time.perf_counter()))
        if self.address_claimed is not None:
            try:
                await self.address_claimed(app, address)
            except Exception as exc:  # the dyno still runs; its add-ons are out of its reach
                log.warning("add-on access for %s not granted: %s", dyno_id, exc)
        await self.spawner.go(dyno_id)
        if warm is not None:
            self._warm_changed.set()  # now make its replacement
        if log.isEnabledFor(logging.DEBUG):
            log.debug("start %s: %s", dyno_id, " ".join(
                f"{name}={(t - prev) * 1000:.1f}ms" for (_, prev), (name, t) in zip(stages, stages[1:], strict=False)))
        if not attached:
            self.emit(live, f"Starting process with command `{command}`")
        self._watch(live)
        if orphaned or app in self.retiring or self.closing:  # gone or shutting down meanwhile
            self.nursery.start_soon(self.stop, live, "retired")
        return live

    async def _slug_dir(self, slug_id: str, uid: int, gid: int) -> Path:
        """The slug's unpacked dir; after the first dyno of a release, a dict lookup and a stat."""
        path = self._unpacked.get(slug_id)
        if path is None or not path.is_dir():
            path = await trio.to_thread.run_sync(self.slugs.unpacked, slug_id, uid, gid)
            self._unpacked[slug_id] = path
        return path

    async def _stack(self, app: str) -> Path:
        """The stack's rootfs, built on first need (its progress goes to the app's log)."""
        if self._stack_path is None or not self._stack_path.is_dir():
            def progress(line: str) -> None:
                trio.from_thread.run_sync(self.logs.emit, app, "dynod", "stack", line)

            self._stack_path = await trio.to_thread.run_sync(self.stacks.ensure, self.settings.stack, progress)
        return self._stack_path

    def forget_stack(self) -> None:
        """The stack was rebuilt: look it up again for the next dyno."""
        self._stack_path = None

    async def _wire(self, address: str, pid: int, cgroup: DynoCgroup, *, network: bool) -> None:
        """Move a new dyno into its cgroups and plug in its veth, all at once, before it may run."""
        async with trio.open_nursery() as nursery:
            for procs in cgroup.procs_files():
                nursery.start_soon(trio.to_thread.run_sync, _write_pid, procs, pid)
            if network:
                nursery.start_soon(self.network.attach, address, pid)

    def _watch(self, live: LiveDyno) -> None:
        """Start the tasks that follow one dyno: its logs, its memory, its boot."""
        if not is_one_off(live.record):
            s = self.settings.dynos
            live.cycle_at = cycling.next_cycle_at(live.record.created_at, self._rng, hours=s.cycle_hours,
                                                  jitter_minutes=s.cycle_jitter_minutes)
        if not live.record.attached:
            for kind in ("stdout", "stderr"):
                fd = live.fds.pop(kind, None)
                if fd is not None:
                    os.set_blocking(fd, False)
                    self.nursery.start_soon(self.logs.pump, live.app, live.name, fd)
        self.nursery.start_soon(self._follow, live)

    async def _follow(self, live: LiveDyno) -> None:
        with live.scope:
            async with trio.open_nursery() as nursery:
                if live.cgroup is not None:
                    nursery.start_soon(self._watch_memory, live, live.cgroup)
                if live.record.state == DynoState.STARTING:
                    nursery.start_soon(self._boot, live)
                elif live.record.type == "web" and live.record.state == DynoState.UP:
                    nursery.start_soon(self._watch_health, live)  # adopted after a dynod restart

    async def _boot(self, live: LiveDyno) -> None:
        await live.started.wait()
        if live.exit_status is not None:
            return  # it failed before it ran: the exit, not a boot, is what happened
        if live.record.type == "web" and live.record.ip:
            with trio.move_on_after(self.settings.dynos.boot_timeout) as scope:
                while not await _accepts(live.record.ip, live.record.port):
                    await trio.sleep(0.05)
            if live.exit_status is not None:
                return
            if scope.cancelled_caught:
                self.emit(live, f"Error R10 (Boot timeout) -> Web process failed to bind to $PORT within "
                                f"{self.settings.dynos.boot_timeout:g} seconds of launch")
                await self.kill(live, "R10")
                return
            if not await self._passes_health_check(live, deadline=live.record.created_at
                                                   + self.settings.dynos.boot_timeout):
                return
        self._set_state(live, DynoState.UP)
        if live.record.type == "web":
            await self._watch_health(live)

    async def _passes_health_check(self, live: LiveDyno, *, deadline: float) -> bool:
        """Hold a booting web dyno out of the routes until the app's health check passes (if it has one)."""
        while (check := self.health_checks.get(live.app)) is not None:
            if health.passed(check, await _probe(live.record.ip or "", live.record.port, check)):
                return True
            if live.exit_status is not None:
                return False
            if time.time() >= deadline:
                self.emit(live, f"Error R10 (Boot timeout) -> Web process did not pass its health check "
                                f"(GET {check.path} answering {check.status}) within "
                                f"{self.settings.dynos.boot_timeout:g} seconds of launch")
                await self.kill(live, "R10")
                return False
            await trio.sleep(min(0.5, check.interval))
        return True

    async def _watch_health(self, live: LiveDyno) -> None:
        """Probe a routed web dyno; one that fails the check ``failures`` times in a row is ejected:
        out of the routes at once (a hung dyno would cost each request sent to it an H12), then replaced."""
        failures = 0
        while not live.stopping and live.exit_status is None:
            check = self.health_checks.get(live.app)
            # Without a check, look again now and then: one set later applies to the running dynos.
            await trio.sleep(check.interval if check is not None else health.HealthCheck().interval)
            check = self.health_checks.get(live.app)
            if check is None or live.stopping:
                failures = 0
                continue
            if health.passed(check, await _probe(live.record.ip or "", live.record.port, check)):
                failures = 0
                continue
            failures += 1
            if health.should_eject(check, failures):
                self.emit(live, f"Health check failed {failures} times in a row (GET {check.path} did not "
                                f"answer {check.status} within {check.timeout:g} s): out of the routes, restarting")
                self.nursery.start_soon(self.stop, live, "health check")
                return

    async def _watch_memory(self, live: LiveDyno, cgroup: DynoCgroup) -> None:
        try:
            watch: MemoryWatch = cgroup.watch_memory()
        except OSError as exc:
            log.warning("no memory events for %s: %s", live.id, exc)
            return
        live.oom_kills = _safe(cgroup.oom_kills, 0)
        try:
            while True:
                await trio.lowlevel.wait_readable(watch.fileno())
                watch.drain()
                if live.exited.is_set():
                    return  # _on_exit reads the OOM counter itself
                if self._note_oom_kill(live):
                    await self._kill_now(live)
                    return
                self._check_quota(live, cgroup)
                # Usage hovering at the threshold must not spin. An OOM kill that lands in this
                # sleep is still seen: by the next wake-up, or by _on_exit if the dyno died of it.
                await trio.sleep(0.5)
        finally:
            watch.close()

    def _note_oom_kill(self, live: LiveDyno) -> bool:
        """If the kernel OOM-killed in this dyno since we last looked, log R15 (once) and say so.

        Called from the memory watch and again when the dyno exits: the kill and the exit can both
        land while the watch sleeps after an R14, and every OOM kill must be an R15 and a restart.
        """
        cgroup = live.cgroup
        if cgroup is None:
            return False
        kills = _safe(cgroup.oom_kills, live.oom_kills)
        if kills <= live.oom_kills:
            return False
        live.oom_kills = kills
        if live.killed_for:
            return False  # already reported (R15) or killed by dynod for another reason (R10)
        stats = _safe(cgroup.memory_stats, None)
        # After the kill the usage has dropped: report what crossed the line, the hard limit.
        usage = max(stats.total if stats is not None else 0,
                    int(cgroup.quota * self.settings.dynos.hard_limit_ratio))
        live.killed_for = "R15"
        self.emit(live, r15_line(usage, cgroup.quota))  # its last line says SIGKILL
        return True

    def _check_quota(self, live: LiveDyno, cgroup: DynoCgroup) -> None:
        now = time.time()
        if now - live.last_r14 < 20:
            return  # Heroku repeats R14 with each metrics sample, not on every page fault
        stats = _safe(cgroup.memory_stats, None)
        if stats is not None and stats.total > cgroup.quota:
            live.last_r14 = now
            self.emit(live, r14_line(stats.total, cgroup.quota))

    async def _metrics(self) -> None:
        interval = self.settings.logs.metrics_interval
        if interval <= 0:
            return
        while True:
            await trio.sleep(interval)
            for live in list(self.live.values()):
                if live.cgroup is None or live.exited.is_set():
                    continue
                try:
                    stats = live.cgroup.memory_stats()
                except OSError:
                    continue
                sample = {"memory_total": stats.total, "memory_rss": stats.rss, "memory_cache": stats.cache,
                          "memory_swap": stats.swap, "memory_pgpgin": stats.pgpgin,
                          "memory_pgpgout": stats.pgpgout, "memory_quota": live.cgroup.quota,
                          **live.load.sample()}
                self.logs.emit(live.app, "dynod", live.name, format_sample(live.name, sample))
                self._check_quota(live, live.cgroup)

    async def _sample_load(self) -> None:
        """Every 5 s, as the kernel does, fold each dyno's runnable tasks into its load averages."""
        if self.settings.logs.metrics_interval <= 0:
            return  # nobody reads them
        while True:
            await trio.sleep(SAMPLE_EVERY)
            dynos = [d for d in self.live.values() if d.cgroup is not None and not d.exited.is_set()]
            if not dynos:
                continue
            counts = await trio.to_thread.run_sync(_count_runnable, dynos)
            now = time.monotonic()
            for live, count in zip(dynos, counts, strict=True):
                live.load.fold(count, now)

    def _set_state(self, live: LiveDyno, state: DynoState) -> None:
        old = live.record.state
        if old == state:
            return
        live.record = replace(live.record, state=state, state_changed_at=time.time())
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

    # -- stop --------------------------------------------------------------------------------
    async def stop(self, live: LiveDyno, reason: str = "") -> int | None:
        """Heroku's stop: SIGTERM to every process, a grace period, then SIGKILL."""
        if live.stopping:
            await live.exited.wait()
            return live.exit_status
        live.stopping = True
        self.wake()
        if live.record.type == "web":
            self.on_routes_changed()  # no new requests for a dyno on its way down...
            if self.routes_flushed is not None:
                await self.routes_flushed()  # ...and none in the router's hands when SIGTERM goes:
                # the router's parent has the routes now; its workers apply them on their next turn.
                # A request sent after SIGTERM to a server that stopped accepting waits in its
                # backlog, and the reset at exit dies with the netns: the client would see an H12.
                await trio.sleep(ROUTES_SETTLE)
        if not live.exited.is_set():
            if not live.record.attached:
                self.emit(live, "Stopping all processes with SIGTERM")
            self._signal_all(live, signal.SIGTERM)
            with trio.move_on_after(self.settings.dynos.stop_timeout):
                await live.exited.wait()
            if not live.exited.is_set():
                self.emit(live, f"Error R12 (Exit timeout) -> At least one process failed to exit within "
                                f"{self.settings.dynos.stop_timeout:g} seconds of SIGTERM")
                self.emit(live, "Stopping remaining processes with SIGKILL")
                await self._kill_now(live)
                await live.exited.wait()
        return live.exit_status

    async def kill(self, live: LiveDyno, why: str) -> None:
        """dynod's own kill (R10, R15): the dyno counts as crashed and is restarted."""
        live.killed_for = why
        self.emit(live, "Stopping process with SIGKILL")
        await self._kill_now(live)

    def _signal_all(self, live: LiveDyno, sig: int) -> None:
        if live.cgroup is None:
            return
        for pid in live.cgroup.pids():
            if pid == live.record.pid:
                continue  # tini forwards to its child's group; the app must see SIGTERM only once
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if len(live.cgroup.pids()) <= 1:
            # Only the init is left (or nothing): stop it too, it owns no app to wait for.
            try:
                if live.record.pid:
                    os.kill(live.record.pid, sig)
            except ProcessLookupError:
                pass

    async def _kill_now(self, live: LiveDyno) -> None:
        # SIGKILL to PID 1 of the dyno's PID namespace takes every process in it.
        try:
            await self.spawner.kill(live.id, signal.SIGKILL)
        except SpawnerError:
            pass
        if live.cgroup is not None:
            live.cgroup.kill_all()

    async def stop_all(self) -> None:
        self.closing = True
        self._warm_changed.set()
        async with trio.open_nursery() as nursery:
            while self._warm:
                nursery.start_soon(self._discard_warm, self._warm.pop())
            for live in list(self.live.values()):
                nursery.start_soon(self.stop, live, "shutdown")

    # -- events from the spawner -------------------------------------------------------------
    async def _events(self) -> None:
        async for event in self.spawner.events():
            session = self.exec_events.get(event.id)
            if session is not None:
                session.send_nowait(event)
                continue
            task = self._task_exits.get(event.id)
            if task is not None:
                if event.op == "exited":
                    task.send_nowait(event)
                continue
            live = self.live.get(event.id)
            if live is None:
                if event.op == "exited":
                    # A warm dyno that died in the pool (or a leftover): never hand it out.
                    self._warm = [w for w in self._warm if w.pool_id != event.id]
                    self._warm_changed.set()
                await self.spawner.forget(event.id)
                continue
            if event.op == "started":
                live.started.set()
            elif event.op == "exited":
                try:
                    await self._on_exit(live, event)
                except Exception:  # one dyno's bookkeeping must never stop the manager
                    log.exception("exit of %s", live.id)
                    live.exited.set()

    async def _on_exit(self, live: LiveDyno, event: SpawnerEvent | AdoptedDyno) -> None:
        status = event.status if event.status is not None else -1
        live.exit_status = status
        live.started.set()
        self._note_oom_kill(live)  # before the exit line, in Heroku's order: R15, SIGKILL, exit
        if event.error:
            self.emit(live, f"Error: the dyno failed to start: {event.error.strip()}")
        elif event.status is None and not live.record.attached:
            self.emit(live, "Process exited (its status was lost with the spawner that forked it)")
        elif not live.record.attached:
            self.emit(live, f"Process exited with status {status}")
        live.scope.cancel()
        one_off = is_one_off(live.record)  # run.N, the release phase: never restarted
        crashed = not live.stopping and not one_off
        if crashed:
            self._set_state(live, DynoState.CRASHED)
            self._say_if_preboot_held(live)
            key = (live.app, live.name)
            history = self.crashes.setdefault(key, [])
            history.append(time.time())
            delay = restart_policy.next_restart_delay(
                history, now=time.time(), base=self.settings.dynos.restart_cooloff_base,
                maximum=self.settings.dynos.restart_cooloff_max)
            self.restart_at[live.id] = time.time() + delay
        else:
            self._set_state(live, DynoState.DOWN)
        await self._release(live, keep_record=crashed)
        live.exited.set()
        self.wake()

    def _say_if_preboot_held(self, crashed: LiveDyno) -> None:
        """A new web dyno died before it was up while preboot keeps its slot's old one: say so."""
        if crashed.record.type != "web" or crashed.record.state != DynoState.CRASHED:
            return
        older = [d for d in self.live.values() if d.app == crashed.app and d.name == crashed.name
                 and d.record.release < crashed.record.release and not d.stopping]
        if older:
            self.emit(crashed, f"Preboot: the v{crashed.record.release} dyno crashed before it was up; "
                               f"v{older[0].record.release} keeps serving until a v{crashed.record.release} "
                               "dyno boots")

    async def _release(self, live: LiveDyno, *, keep_record: bool) -> None:
        """Give back everything a dyno held. Its veth went with its network namespace."""
        self.live.pop(live.id, None)
        self.replacing.discard(live.id)
        if not live.record.attached:  # an attached session closes its fds after the last read
            for fd in live.fds.values():
                _close(fd)
            live.fds.clear()
        if live.cgroup is not None:
            try:
                live.cgroup.kill_all()
                await trio.to_thread.run_sync(live.cgroup.remove)
                self._remove_old_subtrees(live.cgroup)
            except OSError as exc:
                log.warning("cgroup of %s not removed: %s", live.id, exc)
        self.network.pool.release(live.record.ip)
        if self.address_released is not None:
            self.address_released(live.record.ip)
        if not keep_record:
            self.ledger.delete_dyno(live.id)
        try:
            await self.spawner.forget(live.id)
        except SpawnerError:
            pass

    def reset_crashes(self, app: str) -> None:
        """A new release wipes the crash history (Heroku: a deploy resets the cool-off)."""
        for key in [k for k in self.crashes if k[0] == app]:
            del self.crashes[key]
        for record in self.ledger.list_dynos(app):
            self.restart_at.pop(record.id, None)

    # -- the spawner: asked, lost, replaced ------------------------------------------------------
    async def _ask(self, request: Callable[[SpawnerClient], Awaitable[T]]) -> T:
        """A request the spawner answers; SpawnerError if it dies first (its answer would never come)."""
        spawner = self.spawner
        answer: list[T] = []
        async with trio.open_nursery() as nursery:
            async def ask() -> None:
                answer.append(await request(spawner))
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                await spawner.closed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(ask)
            nursery.start_soon(watch)
        if not answer:
            raise SpawnerError("the spawner went away before it answered")
        return answer[0]

    async def spawner_replaced(self, spawner: SpawnerClient) -> None:
        """The spawner died (a kill -9, a bug) and ``spawner`` is its successor, already running.

        Nothing it forked died with it (dynos do not get its death signal), but nobody is their
        parent any more: a dyno that still runs is re-adopted through a pidfd on its init, which
        says when it exits (its exit status went with the old spawner), and is stopped through its
        cgroup as always. One that cannot be followed is killed by its cgroup and replaced. Builds
        in flight fail (their containers are killed), and warm dynos are thrown away.
        """
        self.spawner = spawner
        for task_id, channel in [*self._task_exits.items(), *self.exec_events.items()]:
            try:
                channel.send_nowait(SpawnerEvent("exited", task_id, 0, None, SPAWNER_LOST))
            except trio.WouldBlock:
                pass  # its exit is already queued
        while self._warm:
            self.nursery.start_soon(self._discard_warm, self._warm.pop())
        await self._ask(lambda new: new.hello())  # makes this dynod the new spawner's client
        for live in list(self.live.values()):
            if live.exited.is_set():
                continue
            pidfd = _pidfd_of(live)
            if pidfd is not None:
                live.started.set()  # if it had not exec'd yet, it exits at once: its go pipe is gone
                self.nursery.start_soon(self._follow_orphan, live, pidfd)
                log.warning("re-adopted %s (pid %s) after the spawner was lost", live.id, live.record.pid)
                continue
            log.warning("%s cannot be followed after the spawner was lost: killed by its cgroup", live.id)
            live.stopping = True  # not the app's fault: no crash, its replacement starts at once
            if live.cgroup is not None:
                live.cgroup.kill_all()
            await self._on_exit(live, SpawnerEvent("exited", live.id, live.record.pid or 0, None, ""))
        self.nursery.start_soon(self._events)
        self._warm_changed.set()
        self.wake()

    async def _follow_orphan(self, live: LiveDyno, pidfd: int) -> None:
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        if not live.exited.is_set():
            await self._on_exit(live, SpawnerEvent("exited", live.id, live.record.pid or 0, None, ""))

    # -- adoption after a dynod restart --------------------------------------------------------
    def _open_recorded(self, record: DynoRecord, quota: int, mounts: CgroupMounts) -> DynoCgroup | None:
        """The dyno's group where its record says (a dynod started from another cgroup made it
        elsewhere), else by name under this dynod's subtree (records from before schema v6)."""
        group = recorded_cgroup.reopen(record.cgroup, record.id, quota, mounts)
        return group if group is not None else self.cgroups.open(record.id, quota)

    def _remove_old_subtrees(self, group: DynoCgroup) -> None:
        for removed in recorded_cgroup.remove_old_subtrees(
                recorded_cgroup.directories(group), self.cgroups.roots(), self.settings.cgroups.name):
            log.info("removed %s: the last dyno an earlier dynod made there has gone", removed)

    async def _adopt(self) -> None:
        adopted = {d.id: d for d in await self.spawner.hello()}
        records = {r.id: r for r in self.ledger.list_dynos()}
        mounts = read_mounts()
        for dyno_id, found in adopted.items():
            record = records.get(dyno_id)
            if record is None:
                # The spawner knows a dyno the ledger does not: it belongs to no app any more.
                for fd in found.fds.values():
                    _close(fd)
                if found.status is None:
                    await self.spawner.kill(dyno_id, signal.SIGKILL)
                else:
                    await self.spawner.forget(dyno_id)
                continue
            quota = dyno_size(record.size).memory_mb * MiB
            live = LiveDyno(record, self._open_recorded(record, quota, mounts), found.fds)
            self.live[dyno_id] = live
            if record.ip:
                self.network.pool.claim(record.ip)
            if found.started or found.status is not None:
                live.started.set()
            elif found.status is None:
                # Made but never told to go (dynod died in between): it would wait forever. The
                # spawner ignores this if go was sent; then its exec is a moment away.
                await self.spawner.abort(dyno_id)
            if found.status is not None:
                await self._on_exit(live, found)
                continue
            if record.attached:
                # Its terminal went with the old dynod; Heroku stops a one-off whose client is gone.
                for fd in live.fds.values():
                    _close(fd)
                live.fds.clear()
                self.nursery.start_soon(self.stop, live, "detached client")
            self._watch(live)
        for dyno_id, record in records.items():
            if dyno_id in adopted:
                continue
            if record.state == DynoState.CRASHED:
                self.restart_at.setdefault(dyno_id, time.time())
                continue
            # Gone while nobody watched (the spawner died too, or the host rebooted). Its group
            # may be in another dynod's subtree, where the sweep below does not look.
            stale = recorded_cgroup.reopen(record.cgroup, dyno_id, 0, mounts)
            if stale is not None:
                stale.kill_all()
                try:
                    await trio.to_thread.run_sync(stale.remove)
                    self._remove_old_subtrees(stale)
                except OSError as exc:
                    log.warning("stale cgroup %s not removed: %s", dyno_id, exc)
            self.ledger.delete_dyno(dyno_id)
        for name in self.cgroups.names():
            if name not in self.live:
                cgroup = self.cgroups.open(name, 0)
                if cgroup is not None:
                    cgroup.kill_all()
                    try:
                        await trio.to_thread.run_sync(cgroup.remove)
                    except OSError as exc:
                        log.warning("stale cgroup %s not removed: %s", name, exc)
        await self.network.prune(d.record.ip for d in self.live.values() if d.record.ip)

    # -- warm dynos ------------------------------------------------------------------------------
    def _take_warm(self) -> WarmDyno | None:
        # Its replacement is made once this start is done (see start): forking and moving it now
        # would compete with the very start the warm dyno is there to speed up.
        return self._warm.pop(0) if self._warm else None

    async def _keep_warm(self) -> None:
        if not self.cgroups.can_rename:
            return  # see CgroupV2.can_rename
        while not self.closing:
            while len(self._warm) + self._warm_filling < self.settings.dynos.warm_pool and not self.closing:
                self._warm_filling += 1
                self.nursery.start_soon(self._make_warm)
            await self._warm_changed.wait()
            self._warm_changed = trio.Event()

    async def _make_warm(self) -> None:
        pool_id = f"warm.{secrets.token_hex(4)}"
        cgroup: DynoCgroup | None = None
        address: str | None = None
        pid: int | None = None
        try:
            cgroup = self.cgroups.create(pool_id, WARM_LIMITS)
            address = self.network.pool.allocate()
            pid = await self._ask(lambda spawner: spawner.prefork(pool_id))
            await self._wire(address, pid, cgroup, network=True)
            if self.closing:
                raise UserError("dynod is shutting down")
            self._warm.append(WarmDyno(pool_id, pid, address, cgroup))
        except (OSError, SpawnerError, UserError) as exc:
            if not self.closing:
                log.warning("no warm dyno made: %s", exc)
            if cgroup is not None and address is not None and pid is not None:
                await self._discard_warm(WarmDyno(pool_id, pid, address, cgroup))
            else:
                self.network.pool.release(address)
                if cgroup is not None:
                    cgroup.remove()
            await trio.sleep(1)  # whatever failed, do not spin on it
        finally:
            self._warm_filling -= 1
            self._warm_changed.set()

    async def _discard_warm(self, warm: WarmDyno) -> None:
        try:
            await self.spawner.kill(warm.pool_id, signal.SIGKILL)
        except SpawnerError:
            pass
        warm.cgroup.kill_all()
        try:
            await trio.to_thread.run_sync(warm.cgroup.remove)
        except OSError as exc:
            log.warning("cgroup of warm dyno %s not removed: %s", warm.pool_id, exc)
        self.network.pool.release(warm.address)

    # -- containers that are not dynos (builds) ------------------------------------------------
    async def run_container(self, spec: dict[str, Any], limits: CgroupLimits, *, output: Callable[[bytes], None],
                            timeout: float, attach: Callable[[int], Awaitable[object]] | None = None) -> int | None:
        """Run one container to its end (a build step); None if ``timeout`` passed and it was killed.

        Made exactly as a dyno is (same spawner, namespaces, cgroup limits, non-root uid), but not
        managed: nothing restarts it, and its output goes to ``output`` rather than the log stream.
        """
        task_id = spec["id"]
        cgroup = self.cgroups.create(task_id, limits)
        spec = {**spec, "cgroup_procs": [], "mnt": self.mnt, "stdio": "log"}
        exits_send, exits_recv = trio.open_memory_channel[SpawnerEvent](1)
        self._task_exits[task_id] = exits_send
        timed_out = False
        try:
            spawned = await self._ask(lambda spawner: spawner.spawn(spec))
            try:
                await self._wire("", spawned.pid, cgroup, network=False)
                if attach is not None:  # its network, wired before it may run (a build's veth)
                    await attach(spawned.pid)
            except BaseException:
                for fd in spawned.fds.values():
                    _close(fd)
                with trio.CancelScope(shield=True):
                    await self.spawner.abort(task_id)
                raise
            await self.spawner.go(task_id)
            async with trio.open_nursery() as nursery:
                for kind in ("stdout", "stderr"):
                    fd = spawned.fds.pop(kind, None)
                    if fd is not None:
                        nursery.start_soon(_copy_output, fd, output)
                with trio.move_on_after(timeout) as scope:
                    event = await exits_recv.receive()
                if scope.cancelled_caught:
                    timed_out = True
                    await self.spawner.kill(task_id, signal.SIGKILL)
                    cgroup.kill_all()
                    event = await exits_recv.receive()
                if event.error == SPAWNER_LOST:
                    cgroup.kill_all()  # nobody would reap it now: end it, and its output with it
            for fd in spawned.fds.values():
                _close(fd)
            if event.error == SPAWNER_LOST:
                raise UserError(f"The build failed: {SPAWNER_LOST}; dynod started a new one: build again.")
            if event.error:
                raise UserError(f"The build container could not start: {event.error.strip()}")
            return None if timed_out else event.status
        finally:
            self._task_exits.pop(task_id, None)
            cgroup.kill_all()  # first, and whatever happens: a build never outlives its request
            with trio.CancelScope(shield=True):
                try:
                    await self.spawner.forget(task_id)
                except SpawnerError:
                    pass
                await trio.to_thread.run_sync(cgroup.remove)

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
        crashed = [r for r in self.ledger.list_dynos(app) if r.type == "web" and r.state == DynoState.CRASHED]
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


def _pidfd_of(live: LiveDyno) -> int | None:
    """A pidfd on the dyno's init, if it still runs in the dyno's cgroup (so never a reused pid)."""
    pid = live.record.pid
    if not pid or live.cgroup is None:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    # Checked after the open: the fd now pins this process, so a pid reused since cannot fool it.
    if pid not in _safe(live.cgroup.pids, []):
        os.close(pidfd)
        return None
    return pidfd


async def _accepts(ip: str, port: int) -> bool:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(1):
            await sock.connect((ip, port))
            return True
        return False
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT):
            log.debug("boot probe %s:%s: %s", ip, port, exc)
        return False
    finally:
        sock.close()


async def _probe(ip: str, port: int, check: health.HealthCheck) -> bytes | None:
    """One health-check request; the answer's status line, or None (refused, closed, too slow)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(check.timeout):
            await sock.connect((ip, port))
            await sock.send(check.request(f"{ip}:{port}"))
            data = b""
            while b"\r\n" not in data and len(data) < 8192:
                chunk = await sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.partition(b"\r\n")[0] or None
        return None
    except OSError:
        return None
    finally:
        sock.close()


async def _copy_output(fd: int, output: Callable[[bytes], None]) -> None:
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            if not data:
                return
            output(data)
    finally:
        os.close(fd)


def _count_runnable(dynos: list[LiveDyno]) -> list[int]:
    """Each dyno's runnable tasks (0 for one whose cgroup is gone); runs in a worker thread."""
    return [runnable_tasks(_safe(d.cgroup.pids, []) if d.cgroup is not None else []) for d in dynos]


def _write_pid(procs: str, pid: int) -> None:
    with open(procs, "w") as f:
        f.write(str(pid))


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _safe(fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except OSError:
        return default
