"""The watch stage: everything that follows a dyno while it runs and when it ends. Its boot (R10,
health checks), its memory (R14, throttled; R15 on an OOM kill: memory_policy.py), its runtime
metrics and load averages (load_average.py), the spawner's started/exited events, and the exit:
a crash counted against the restart policy (restart_policy.py) or a stop, and everything the dyno
held given back.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio

from ..linux.cgroups import DynoCgroup, MemoryStats, MemoryWatch
from ..linux.load import runnable_tasks
from ..linux.spawn_messages import Exited, Started
from ..linux.spawner_client import AdoptedDyno, SpawnerError, SpawnerEvent
from ..logplex.metrics import format_sample, r14_line, r15_line
from ..model import DynoState
from . import cycling, health, memory_policy, restart_policy
from .live import LiveDyno, close_fd, log, safe
from .load_average import SAMPLE_EVERY
from .reconcile import is_one_off

if TYPE_CHECKING:
    from .dynos import DynoManager


# Memory watches registered at once, in worker threads of their own: a restart registers one per
# adopted dyno, and on trio's shared limiter (40 threads) they queued every other thread hop of
# dynod (an add-on check, a cgroup removal) behind ~16 ms grace periods: 0.2 s with 500 dynos.
WATCH_REGISTRATIONS = 32

# How often a booting web dyno is probed for its $PORT: each wait a tenth longer than the one
# before, from 2 ms up to 50 ms. A fixed 50 ms made each boot wait 25 ms on average past the app's
# bind, on every deploy, restart and wake from sleep (a request to a sleeping app waits for that
# boot); growing waits see an app up within a tenth of its boot time so far (a fifth before: a
# gunicorn booting in ~0.1 s was seen up to 20 ms late), and a refused connect to a dyno's own
# address costs microseconds (a 0.1 s boot is probed 19 times, 13 before). From ~0.5 s into a
# boot (34 probes) a slow app is probed every 50 ms, as before.
BOOT_PROBE_FIRST = 0.002
BOOT_PROBE_GROWTH = 1.1
BOOT_PROBE_EVERY = 0.05


def boot_probe_delays() -> Iterator[float]:
    """The waits between one booting web dyno's probes, growing to BOOT_PROBE_EVERY."""
    delay = BOOT_PROBE_FIRST
    while True:
        yield delay
        delay = min(delay * BOOT_PROBE_GROWTH, BOOT_PROBE_EVERY)


class Watching:
    def __init__(self, manager: DynoManager) -> None:
        self.m = manager
        self._registering: trio.CapacityLimiter | None = None
        # Dynos a start has asked the spawner for and not registered yet, with the events that
        # came for them meanwhile: a warm dyno can fail as its spec arrives (or, told to go with
        # it, run and exit) before the start hears back. Held, not taken for a warm dyno's or a
        # leftover's and forgotten, which lost the exit and left the dyno starting for ever.
        self._early: dict[str, list[SpawnerEvent]] = {}

    def expect(self, dyno_id: str) -> None:
        """A start is about to ask the spawner for ``dyno_id``: hold its events until ``registered``."""
        self._early[dyno_id] = []

    def unexpect(self, dyno_id: str) -> None:
        """The start gave up before registering it (it cleans up the dyno itself)."""
        self._early.pop(dyno_id, None)

    def registered(self, live: LiveDyno) -> None:
        """The start has put ``live`` in the manager's table: what came early is handled now, in order."""
        held = self._early.pop(live.id, [])
        if held:
            self.m.nursery.start_soon(self._handle_all, live, held)

    async def _handle_all(self, live: LiveDyno, events: list[SpawnerEvent]) -> None:
        for event in events:
            await self.handle(live, event)

    def watch(self, live: LiveDyno) -> None:
        """Start the tasks that follow one dyno: its logs, its memory, its boot."""
        if not is_one_off(live.record):
            s = self.m.settings.dynos
            live.cycle_at = cycling.next_cycle_at(live.record.created_at, self.m._rng, hours=s.cycle_hours,
                                                  jitter_minutes=s.cycle_jitter_minutes)
        if not live.record.attached:
            for kind in ("stdout", "stderr"):
                fd = live.fds.pop(kind, None)
                if fd is not None:
                    os.set_blocking(fd, False)
                    self.m.nursery.start_soon(self.m.logs.pump, live.app, live.name, fd)
        self.m.nursery.start_soon(self.follow, live)

    async def follow(self, live: LiveDyno) -> None:
        with live.scope:
            async with trio.open_nursery() as nursery:
                if live.cgroup is not None:
                    nursery.start_soon(self.watch_memory, live, live.cgroup)
                if live.record.state == DynoState.STARTING:
                    nursery.start_soon(self.boot, live)
                elif live.record.type == "web" and live.record.state == DynoState.UP:
                    nursery.start_soon(self.watch_health, live)  # adopted after a dynod restart

    async def boot(self, live: LiveDyno) -> None:
        await live.started.wait()
        if live.exit_status is not None:
            return  # it failed before it ran: the exit, not a boot, is what happened
        if live.record.type == "web" and live.record.ip:
            with trio.move_on_after(self.m.settings.dynos.boot_timeout) as scope:
                delays = boot_probe_delays()
                while not await _accepts(live.record.ip, live.record.port):
                    await trio.sleep(next(delays))
            if live.exit_status is not None:
                return
            if scope.cancelled_caught:
                self.m.emit(live, f"Error R10 (Boot timeout) -> Web process failed to bind to $PORT within "
                                f"{self.m.settings.dynos.boot_timeout:g} seconds of launch")
                await self.m.kill(live, "R10")
                return
            if not await self.passes_health_check(live, deadline=live.record.created_at
                                                   + self.m.settings.dynos.boot_timeout):
                return
        self.m._set_state(live, DynoState.UP)
        if live.record.type == "web":
            await self.watch_health(live)

    async def passes_health_check(self, live: LiveDyno, *, deadline: float) -> bool:
        """Hold a booting web dyno out of the routes until the app's health check passes (if it has one)."""
        while (check := self.m.health_checks.get(live.app)) is not None:
            if health.passed(check, await _probe(live.record.ip or "", live.record.port, check)):
                return True
            if live.exit_status is not None:
                return False
            if self.m.clock() >= deadline:
                self.m.emit(live, f"Error R10 (Boot timeout) -> Web process did not pass its health check "
                                f"(GET {check.path} answering {check.status}) within "
                                f"{self.m.settings.dynos.boot_timeout:g} seconds of launch")
                await self.m.kill(live, "R10")
                return False
            await trio.sleep(min(0.5, check.interval))
        return True

    async def watch_health(self, live: LiveDyno) -> None:
        """Probe a routed web dyno; one that fails the check ``failures`` times in a row is ejected:
        out of the routes at once (a hung dyno would cost each request sent to it an H12), then replaced."""
        failures = 0
        while not live.stopping and live.exit_status is None:
            check = self.m.health_checks.get(live.app)
            # Without a check, look again now and then: one set later applies to the running dynos.
            await trio.sleep(check.interval if check is not None else health.HealthCheck().interval)
            check = self.m.health_checks.get(live.app)
            if check is None or live.stopping:
                failures = 0
                continue
            if health.passed(check, await _probe(live.record.ip or "", live.record.port, check)):
                failures = 0
                continue
            failures += 1
            if health.should_eject(check, failures):
                self.m.emit(live, f"Health check failed {failures} times in a row (GET {check.path} did not "
                                f"answer {check.status} within {check.timeout:g} s): out of the routes, restarting")
                self.m.nursery.start_soon(self.m.stop, live, "health check")
                return

    async def watch_memory(self, live: LiveDyno, cgroup: DynoCgroup) -> None:
        # The OOM count to compare with, read before the registration's thread hop: a kill while
        # the thread registers is then still an R15 (seen by on_exit, or by the first event).
        live.oom_kills = safe(cgroup.oom_kills, 0)
        try:
            # In a worker thread: on cgroup v1 the usage threshold's registration waits out an RCU
            # grace period (8-16 ms here). On trio's thread it stalled everything for that long per
            # dyno (6 s before the API answered after a restart with 300 dynos); in threads the
            # waits overlap (30 at once take ~36 ms).
            if self._registering is None:
                self._registering = trio.CapacityLimiter(WATCH_REGISTRATIONS)
            watch: MemoryWatch = await trio.to_thread.run_sync(cgroup.watch_memory, limiter=self._registering)
        except OSError as exc:
            if not live.exited.is_set():  # else its group went while the thread registered: nothing to watch
                log.warning("no memory events for %s: %s", live.id, exc)
            return
        try:
            while True:
                await trio.lowlevel.wait_readable(watch.fileno())
                watch.drain()
                if live.exited.is_set():
                    return  # on_exit reads the OOM counter itself
                if self.note_oom_kill(live):
                    await self.m.stopping.kill_now(live)
                    return
                self.check_quota(live, cgroup)
                # Usage hovering at the threshold must not spin. An OOM kill that lands in this
                # sleep is still seen: by the next wake-up, or by on_exit if the dyno died of it.
                await trio.sleep(0.5)
        finally:
            watch.close()

    def note_oom_kill(self, live: LiveDyno) -> bool:
        """If the kernel OOM-killed in this dyno since we last looked, log R15 (once) and say so.

        Called from the memory watch and again when the dyno exits: the kill and the exit can both
        land while the watch sleeps after an R14, and every OOM kill must be an R15 and a restart.
        """
        cgroup = live.cgroup
        if cgroup is None:
            return False
        verdict = memory_policy.oom_verdict(kills=safe(cgroup.oom_kills, live.oom_kills), seen=live.oom_kills,
                                            killed_for=live.killed_for)
        live.oom_kills = verdict.seen
        if not verdict.report_r15:
            return False
        stats = safe(cgroup.memory_stats, None)
        usage = memory_policy.r15_usage(total=stats.total if stats is not None else None, quota=cgroup.quota,
                                        hard_limit_ratio=self.m.settings.dynos.hard_limit_ratio)
        live.killed_for = "R15"
        self.m.emit(live, r15_line(usage, cgroup.quota))  # its last line says SIGKILL
        return True

    def check_quota(self, live: LiveDyno, cgroup: DynoCgroup, stats: MemoryStats | None = None) -> None:
        """R14 if the dyno is over its quota; ``stats`` when the caller has just read them."""
        now = self.m.clock()
        if now - live.last_r14 < memory_policy.R14_EVERY:
            return  # not even a read: this runs on every memory event of a dyno over its quota
        if stats is None:
            stats = safe(cgroup.memory_stats, None)
        if stats is not None and memory_policy.r14_due(total=stats.total, quota=cgroup.quota,
                                                       last_r14=live.last_r14, now=now):
            live.last_r14 = now
            self.m.emit(live, r14_line(stats.total, cgroup.quota))

    async def metrics(self) -> None:
        interval = self.m.settings.logs.metrics_interval
        if interval <= 0:
            return
        while True:
            await trio.sleep(interval)
            dynos = [d for d in self.m.live.values() if d.cgroup is not None and not d.exited.is_set()]
            if not dynos:
                continue
            # Two cgroup files per dyno, ~0.045 ms here: read on trio's thread, 1,000 dynos would stall
            # the API and every start for ~50 ms each interval. One worker thread reads them all.
            readings = await trio.to_thread.run_sync(_read_memory_stats, dynos)
            for live, stats in zip(dynos, readings, strict=True):
                if stats is None or live.cgroup is None or live.exited.is_set():
                    continue  # its cgroup went (or it exited) while the thread read
                sample = {"memory_total": stats.total, "memory_rss": stats.rss, "memory_cache": stats.cache,
                          "memory_swap": stats.swap, "memory_pgpgin": stats.pgpgin,
                          "memory_pgpgout": stats.pgpgout, "memory_quota": live.cgroup.quota,
                          **live.load.sample()}
                self.m.logs.emit(live.app, "dynod", live.name, format_sample(live.name, sample))
                self.check_quota(live, live.cgroup, stats)

    async def sample_load(self) -> None:
        """Every 5 s, as the kernel does, fold each dyno's runnable tasks into its load averages."""
        if self.m.settings.logs.metrics_interval <= 0:
            return  # nobody reads them
        while True:
            await trio.sleep(SAMPLE_EVERY)
            dynos = [d for d in self.m.live.values() if d.cgroup is not None and not d.exited.is_set()]
            if not dynos:
                continue
            counts = await trio.to_thread.run_sync(_count_runnable, dynos)
            now = trio.current_time()
            for live, count in zip(dynos, counts, strict=True):
                live.load.fold(count, now)

    async def events(self) -> None:
        async for event in self.m.spawner.events():
            session = self.m.exec_events.get(event.id)
            if session is not None:
                session.send_nowait(event)
                continue
            task = self.m._task_exits.get(event.id)
            if task is not None:
                if isinstance(event, Exited):
                    task.send_nowait(event)
                continue
            live = self.m.live.get(event.id) or self.m.early.get(event.id)
            if live is None and event.id in self._early:
                self._early[event.id].append(event)
                continue
            if live is None:
                if isinstance(event, Exited):
                    # A warm dyno that died in the pool (or a leftover): never hand it out.
                    self.m._warm = [w for w in self.m._warm if w.pool_id != event.id]
                    self.m._warm_changed.set()
                await self.m.spawner.forget(event.id)
                continue
            await self.handle(live, event)

    async def handle(self, live: LiveDyno, event: SpawnerEvent) -> None:
        if isinstance(event, Started):
            live.started.set()
        elif isinstance(event, Exited):
            try:
                if self.m.early.get(live.id) is live:
                    await self.on_early_exit(live, event)
                    return
                await self.on_exit(live, event)
            except Exception:  # one dyno's bookkeeping must never stop the manager
                log.exception("exit of %s", live.id)
                live.exited.set()

    async def on_exit(self, live: LiveDyno, event: Exited | AdoptedDyno) -> None:
        status = event.status if event.status is not None else -1
        live.exit_status = status
        live.started.set()
        self.note_oom_kill(live)  # before the exit line, in Heroku's order: R15, SIGKILL, exit
        if event.error:
            self.m.emit(live, f"Error: the dyno failed to start: {event.error.strip()}")
        elif event.status is None and not live.record.attached:
            self.m.emit(live, "Process exited (its status was lost with the spawner that forked it)")
        elif not live.record.attached:
            self.m.emit(live, f"Process exited with status {status}")
        live.scope.cancel()
        one_off = is_one_off(live.record)  # run.N, the release phase: never restarted
        crashed = not live.stopping and not one_off
        if crashed:
            self.m._set_state(live, DynoState.CRASHED)
            self.say_if_preboot_held(live)
            key = (live.app, live.name)
            history = self.m.crashes.setdefault(key, [])
            history.append(self.m.clock())
            delay = restart_policy.next_restart_delay(
                history, now=self.m.clock(), base=self.m.settings.dynos.restart_cooloff_base,
                maximum=self.m.settings.dynos.restart_cooloff_max)
            self.m.restart_at[live.id] = self.m.clock() + delay
        else:
            self.m._set_state(live, DynoState.DOWN)
        await self.release(live, keep_record=crashed)
        live.exited.set()
        self.m.wake()

    async def on_early_exit(self, live: LiveDyno, event: Exited) -> None:
        """An early dyno (early_boot.py) ended before any release took it: killed as not needed,
        or its app failed to boot. It was nobody's, so nothing is logged, counted or restarted;
        the release's own start of that slot shows what the app does."""
        self.m.early.pop(live.id, None)
        live.exit_status = event.status if event.status is not None else -1
        live.started.set()
        live.scope.cancel()
        await self.release(live, keep_record=True)  # it has no record to delete
        live.exited.set()

    def say_if_preboot_held(self, crashed: LiveDyno) -> None:
        """A new web dyno died before it was up while preboot keeps its slot's old one: say so."""
        if crashed.record.type != "web" or crashed.record.state != DynoState.CRASHED:
            return
        older = [d for d in self.m.live.values() if d.app == crashed.app and d.name == crashed.name
                 and d.record.release < crashed.record.release and not d.stopping]
        if older:
            self.m.emit(crashed, f"Preboot: the v{crashed.record.release} dyno crashed before it was up; "
                               f"v{older[0].record.release} keeps serving until a v{crashed.record.release} "
                               "dyno boots")

    async def release(self, live: LiveDyno, *, keep_record: bool) -> None:
        """Give back everything a dyno held. Its veth went with its network namespace."""
        self.m.live.pop(live.id, None)
        self.m.replacing.discard(live.id)
        if not live.record.attached:  # an attached session closes its fds after the last read
            for fd in live.fds.values():
                close_fd(fd)
            live.fds.clear()
        if live.cgroup is not None:
            try:
                live.cgroup.kill_all()
                await trio.to_thread.run_sync(live.cgroup.remove)
                self.m.adopting.remove_old_subtrees(live.cgroup)
            except OSError as exc:
                log.warning("cgroup of %s not removed: %s", live.id, exc)
        self.m.network.pool.release(live.record.ip)
        if self.m.address_released is not None:
            self.m.address_released(live.record.ip)
        if not keep_record:
            self.m.ledger.delete_dyno(live.id)
        try:
            await self.m.spawner.forget(live.id)
        except SpawnerError:
            pass


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


def _read_memory_stats(dynos: list[LiveDyno]) -> list[MemoryStats | None]:
    """Each dyno's memory figures (None for one whose cgroup is gone); runs in a worker thread."""
    return [safe(d.cgroup.memory_stats, None) if d.cgroup is not None else None for d in dynos]


def _count_runnable(dynos: list[LiveDyno]) -> list[int]:
    """Each dyno's runnable tasks (0 for one whose cgroup is gone); runs in a worker thread."""
    return [runnable_tasks(safe(d.cgroup.pids, []) if d.cgroup is not None else []) for d in dynos]
