"""The dyno manager without root: the real DynoManager, the real reconcile and policies, the real
SQLite ledger, on the in-memory spawner, cgroups, network and processes of fake_runtime.py and on
trio's MockClock (the manager's wall clock is the mock one plus an epoch), so minutes of cool-off
and stop deadlines pass in milliseconds and every deadline is exact."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from dynod.ledger.sqlite import SqliteLedger
from dynod.linux.cgroups import CgroupLimits
from dynod.manager.dynos import DynoManager, LiveDyno
from dynod.manager.starting import REFILL_WAIT_S
from dynod.manager.watching import BOOT_PROBE_EVERY, BOOT_PROBE_FIRST, boot_probe_delays
from dynod.model import DynoState, MiB
from dynod.settings import DynoSettings, LogSettings, Settings

from .fake_runtime import (
    SIGKILL_STATUS,
    SIGTERM_STATUS,
    FakeCgroup,
    FakeCgroups,
    FakeKernel,
    FakeLogs,
    FakeNetwork,
    FakeProcesses,
    FakeSlugs,
    FakeSpawner,
    FakeStacks,
)

EPOCH = 1_800_000_000.0
APP = "shop"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Jumps only once every task has been idle a moment of real time: the manager's worker-thread
    # hops (cgroup removal, slug lookup) finish before any deadline is jumped to.
    return trio.testing.MockClock(autojump_threshold=0.02)


@dataclass
class World:
    manager: DynoManager
    ledger: SqliteLedger
    kernel: FakeKernel
    spawner: FakeSpawner
    cgroups: FakeCgroups
    network: FakeNetwork
    logs: FakeLogs
    slugs: FakeSlugs
    now: Callable[[], float]

    def live(self, name: str) -> LiveDyno | None:
        return self.manager.find(APP, name)

    def lines(self, name: str) -> list[str]:
        return self.logs.of(name)

    async def until(self, what: str, predicate: Callable[[], object], timeout: float = 3600) -> None:
        with trio.move_on_after(timeout):
            while not predicate():
                # virtual time: each turn costs the clock's autojump threshold in real time
                await trio.sleep(0.25)
            return
        raise AssertionError(f"never: {what}\n" + "\n".join(f"{line.dyno}: {line.message}" for line in self.logs.lines))


def _settings(tmp: Path, **dynos: object) -> Settings:
    base = {"stop_timeout": 30.0, "restart_cooloff_base": 20.0, "restart_cooloff_max": 1200.0, "warm_pool": 0}
    return Settings(state_dir=tmp / "state", run_dir=tmp / "run", stacks_path=tmp / "stacks",
                    dynos=DynoSettings(**{**base, **dynos}),  # type: ignore[arg-type]
                    logs=LogSettings(metrics_interval=0))


@asynccontextmanager
async def world(tmp_path: Path, *, ledger: SqliteLedger | None = None, kernel: FakeKernel | None = None,
                spawner: FakeSpawner | None = None, cgroups: FakeCgroups | None = None,
                **dynos: object) -> AsyncIterator[World]:
    """A running DynoManager on the fakes; stops it (stop_all) on the way out."""
    def now() -> float:
        return EPOCH + trio.current_time()

    for d in ("state", "run", "slug", "stack"):
        (tmp_path / d).mkdir(exist_ok=True)
    settings = _settings(tmp_path, **dynos)
    kernel = kernel or FakeKernel()
    spawner = spawner or FakeSpawner(kernel)
    cgroups = cgroups or FakeCgroups(kernel)
    ledger = ledger or SqliteLedger(tmp_path / "state" / "dynod.sqlite3", clock=now)
    network, logs = FakeNetwork(), FakeLogs(now)
    slugs = FakeSlugs(str(tmp_path / "slug"))
    manager = DynoManager(settings, ledger=ledger, spawner=spawner, cgroups=cgroups, network=network,
                          logs=logs, slugs=slugs, stacks=FakeStacks(str(tmp_path / "stack")),
                          processes=FakeProcesses(kernel, cgroups), clock=now)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        try:
            yield World(manager, ledger, kernel, spawner, cgroups, network, logs, slugs, now)
        finally:
            with trio.CancelScope(shield=True):
                await manager.stop_all()
            nursery.cancel_scope.cancel()


def deploy(ledger: SqliteLedger, **types: int) -> None:
    """An app whose release runs each process type at the given quantity."""
    if APP not in {a.name for a in ledger.list_apps()}:
        ledger.create_app(APP)
    ledger.create_release(APP, slug_id="slug1", config={}, process_types={t: f"run-{t}" for t in types},
                          description="Deploy")
    for kind, quantity in types.items():
        ledger.set_formation(APP, kind, quantity=quantity)


async def test_a_scaled_worker_starts_in_its_cgroup_with_its_address(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        deploy(w.ledger, worker=2)
        w.manager.wake()
        await w.until("two workers up", lambda: all(
            (d := w.live(f"worker.{i}")) is not None and d.record.state == DynoState.UP for i in (1, 2)))
        for name in ("worker.1", "worker.2"):
            live = w.live(name)
            assert live is not None and isinstance(live.cgroup, FakeCgroup)
            # its init (and the app it forks) were moved into its own group before it could run
            assert live.record.pid in live.cgroup.pids() and len(live.cgroup.pids()) == 2
            assert (live.record.ip, live.record.pid) in w.network.attached
            assert live.cgroup.limits.memory_max == 2 * live.cgroup.quota == 2 * 512 * MiB
            assert w.lines(name)[:2] == ["Starting process with command `run-worker`",
                                         "State changed from starting to up"]
        ops = [op for op, _ in w.spawner.requests]
        assert ops.count("spawn") == 2 and ops.count("go") == 2 and "abort" not in ops
        assert len(w.cgroups.joined) == 2  # v1 groups: each dyno is moved in after its fork


async def test_on_cgroup2_a_dyno_is_born_in_its_group_and_never_moved(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    kernel = FakeKernel()
    cgroups = FakeCgroups(kernel, cgroup2=True)
    async with world(tmp_path, kernel=kernel, cgroups=cgroups, spawner=FakeSpawner(kernel, cgroups)) as w:
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("the worker up", lambda: (d := w.live("worker.1")) is not None
                      and d.record.state == DynoState.UP)
        live = w.live("worker.1")
        assert live is not None and isinstance(live.cgroup, FakeCgroup)
        assert live.record.pid in live.cgroup.pids() and len(live.cgroup.pids()) == 2
        assert cgroups.joined == []  # no cgroup.procs write after the fork: no grace period to wait
        assert (live.record.ip, live.record.pid) in w.network.attached


@pytest.mark.parametrize(("join_ms", "joins_itself"), [(0.3, True), (10.0, False)])
async def test_a_v1_dyno_joins_its_groups_itself_only_where_the_join_was_timed_cheap(
        tmp_path: Path, clock: trio.testing.MockClock, join_ms: float, joins_itself: bool) -> None:
    kernel = FakeKernel()
    cgroups = FakeCgroups(kernel)
    cgroups.own_join_ms = join_ms  # favordynmods in effect (0.3 ms) or a grace period to wait (10 ms)
    async with world(tmp_path, kernel=kernel, cgroups=cgroups, spawner=FakeSpawner(kernel, cgroups)) as w:
        await w.until("the join timed", lambda: cgroups.join_timings == 1)
        assert not [name for name in cgroups.groups if name.startswith("probe.")]  # its group is gone
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("the worker up", lambda: (d := w.live("worker.1")) is not None
                      and d.record.state == DynoState.UP)
        live = w.live("worker.1")
        assert live is not None and isinstance(live.cgroup, FakeCgroup)
        assert live.record.pid in live.cgroup.pids() and len(live.cgroup.pids()) == 2  # in its group either way
        assert w.manager.starting.children_join is joins_itself
        assert cgroups.joined == ([] if joins_itself else live.cgroup.procs_files())  # dynod's own moves
        assert cgroups.join_timings == 1  # timed once, at start


@pytest.mark.parametrize(("join_ms", "primed"), [(0.3, False), (10.0, True)])
async def test_a_cold_start_primes_the_cgroup_lock_after_its_group_is_made_and_before_its_moves(
        tmp_path: Path, clock: trio.testing.MockClock, join_ms: float, primed: bool) -> None:
    kernel = FakeKernel()
    cgroups = FakeCgroups(kernel)
    cgroups.own_join_ms = join_ms  # 10 ms: dynod moves the dyno and has a primer (cgroups/primer.py)
    async with world(tmp_path, kernel=kernel, cgroups=cgroups, spawner=FakeSpawner(kernel, cgroups)) as w:
        await w.until("the join timed", lambda: cgroups.join_timings == 1)
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("the worker up", lambda: (d := w.live("worker.1")) is not None
                      and d.record.state == DynoState.UP)
        live = w.live("worker.1")
        assert live is not None
        if not primed:  # the dyno joins its groups itself, cheaply: nothing to get ready
            assert cgroups.primers == []
            return
        [primer] = cgroups.primers
        # Once per cold start; its group was made (the no-op move holds cgroup_mutex while it
        # waits, so a mkdir after it would wait too) and nothing was moved yet.
        assert primer.at == [(live.id, 0)]
        assert cgroups.joined == live.cgroup.procs_files()
        await w.manager.stop_all()
        assert primer.closed and w.manager.starting.primer is None  # before the subtree is removed


async def test_a_primer_made_while_dynod_stops_is_closed_at_once(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    # A shutdown during the start-up's join probe: stop_all finds no primer to close, and the one
    # made after it would hold its group past the subtree's removal (the suite's leak check saw it).
    kernel = FakeKernel()
    cgroups = FakeCgroups(kernel)
    async with world(tmp_path, kernel=kernel, cgroups=cgroups, spawner=FakeSpawner(kernel, cgroups)) as w:
        cgroups.on_primer_made = lambda: trio.from_thread.run(w.manager.stop_all)
        await w.until("the join timed", lambda: cgroups.join_timings == 1)
        await w.until("the primer made", lambda: len(cgroups.primers) == 1)
        await w.until("and closed", lambda: cgroups.primers[0].closed)
        assert w.manager.starting.primer is None


async def test_a_start_from_the_warm_pool_does_not_prime(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    kernel = FakeKernel()
    cgroups = FakeCgroups(kernel)
    async with world(tmp_path, kernel=kernel, cgroups=cgroups, spawner=FakeSpawner(kernel, cgroups), warm_pool=2) as w:
        await w.until("two warm dynos", lambda: len(w.manager._warm) == 2)
        [primer] = cgroups.primers
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("a worker up", lambda: (d := w.live("worker.1")) is not None and d.record.state == DynoState.UP)
        assert [op for op, _ in w.spawner.requests].count("assign") == 1
        assert primer.primes == 0  # renamed, not moved: no lock to get ready


async def test_a_crash_loop_restarts_at_once_then_waits_a_growing_cool_off(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path, restart_cooloff_base=2.0) as w:
        deploy(w.ledger, worker=1)
        w.manager.wake()
        starts: list[float] = []
        seen: set[str] = set()
        for _ in range(5):
            await w.until("a worker up", lambda: (d := w.live("worker.1")) is not None
                          and d.record.state == DynoState.UP and d.id not in seen)
            live = w.live("worker.1")
            assert live is not None
            seen.add(live.id)
            starts.append(live.record.created_at)
            w.spawner.crash(live.id, status=1)
        # while cooling off the crashed record stays, as `ps` shows it ("crashed")
        await w.until("the fifth crash recorded", lambda: [r.state for r in w.ledger.list_dynos(APP)]
                      == [DynoState.CRASHED])
        crashes = [line.at for line in w.logs.lines if line.message == "State changed from up to crashed"]
        waits = [round(start - crash, 1) for crash, start in zip(crashes, starts[1:], strict=False)]
        # Heroku: the first crash restarts at once, then base, 2 x base, 4 x base ... (restart_policy.py)
        assert len(crashes) == 5 and waits == [0.0, 2.0, 4.0, 8.0], waits
        assert "Process exited with status 1" in w.lines("worker.1")
        await trio.sleep(10)
        assert w.live("worker.1") is None  # the fifth crash waits 16 s
        asked = w.now()
        w.manager.restart_crashed_now(APP, "worker")  # ps:restart: no more waiting
        await w.until("restarted on request", lambda: (d := w.live("worker.1")) is not None and d.id not in seen)
        restarted = w.live("worker.1")
        assert restarted is not None and restarted.record.created_at - asked < 0.5


async def test_a_failing_start_backs_off_1_2_4_seconds(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        w.slugs.broken = "the slug cannot be read"
        deploy(w.ledger, worker=1)
        w.manager.wake()
        def errors() -> list[float]:
            return [line.at for line in w.logs.lines if line.message.startswith("Error: the dyno could not start")]

        await w.until("five failed starts", lambda: len(errors()) >= 5)
        at = errors()
        assert [round(b - a, 1) for a, b in zip(at, at[1:], strict=False)][:4] == [1.0, 2.0, 4.0, 8.0]
        assert "the slug cannot be read" in w.lines("worker.1")[0]
        # nothing was left behind by the failed starts: no group, no address, no record, no spawn
        assert w.cgroups.groups == {} and w.ledger.list_dynos(APP) == []
        assert w.network.pool.statistics()["in_use"] == 0 and w.spawner.requests == [("hello", "")]
        w.slugs.broken = ""
        await w.until("it starts once the slug is back", lambda: w.live("worker.1") is not None, timeout=61)


async def test_stop_sends_sigterm_then_sigkill_after_the_stop_timeout(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path, stop_timeout=30.0) as w:
        deploy(w.ledger, worker=2)
        w.manager.wake()
        await w.until("two workers up", lambda: all(
            (d := w.live(f"worker.{i}")) is not None and d.record.state == DynoState.UP for i in (1, 2)))
        polite, stubborn = w.live("worker.1"), w.live("worker.2")
        assert polite is not None and stubborn is not None
        app = w.kernel.app(stubborn.id)
        assert app is not None
        app.ignores_sigterm = True
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.manager.stop, polite, "test")
            nursery.start_soon(w.manager.stop, stubborn, "test")
        assert polite.exit_status == SIGTERM_STATUS and stubborn.exit_status == SIGKILL_STATUS
        assert trio.current_time() - t0 == pytest.approx(30.0, abs=0.5)  # the deadline, exactly
        # SIGTERM went to the app, never to its init (tini forwards it: the app would get it twice)
        sent = [(dyno, sig) for dyno, pid, sig in w.kernel.signals if pid != polite.record.pid
                and pid != stubborn.record.pid]
        assert (polite.id, signal.SIGTERM) in sent and (stubborn.id, signal.SIGTERM) in sent
        assert not [1 for _, pid, sig in w.kernel.signals if pid in (polite.record.pid, stubborn.record.pid)
                    and sig == signal.SIGTERM]
        def stop_lines(name: str, count: int) -> list[str]:
            # (its replacement starts meanwhile, under the same name: the formation still wants it)
            replacement = ("Starting process with command `run-worker`", "State changed from starting to up")
            lines = [line for line in w.lines(name)[2:] if line not in replacement]
            return lines[:count]

        assert stop_lines("worker.1", 3) == ["Stopping all processes with SIGTERM",
                                             f"Process exited with status {SIGTERM_STATUS}",
                                             "State changed from up to down"]
        assert stop_lines("worker.2", 5) == [
            "Stopping all processes with SIGTERM",
            "Error R12 (Exit timeout) -> At least one process failed to exit within 30 seconds of SIGTERM",
            "Stopping remaining processes with SIGKILL", f"Process exited with status {SIGKILL_STATUS}",
            "State changed from up to down"]
        for live in (polite, stubborn):  # everything it held is given back
            assert isinstance(live.cgroup, FakeCgroup) and live.cgroup.removed
        stopped = {polite.id, stubborn.id}
        assert not stopped & {r.id for r in w.ledger.list_dynos(APP)}


async def test_r14_is_throttled_and_an_oom_kill_is_r15_then_a_restart(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("a worker up", lambda: (d := w.live("worker.1")) is not None and d.record.state == DynoState.UP)
        live = w.live("worker.1")
        assert live is not None and isinstance(live.cgroup, FakeCgroup)
        group = live.cgroup
        await trio.sleep(1)
        group.use_memory(600 * MiB)  # over the 512 MB quota: R14, and it runs on
        await w.until("R14", lambda: "Error R14 (Memory quota exceeded)" in w.lines("worker.1"))
        for _ in range(10):  # more events within 20 s: no more R14 lines
            group.use_memory(610 * MiB)
            await trio.sleep(1)
        assert w.lines("worker.1").count("Error R14 (Memory quota exceeded)") == 1
        await trio.sleep(10)
        group.use_memory(620 * MiB)
        await w.until("R14 again after 20 s",
                      lambda: w.lines("worker.1").count("Error R14 (Memory quota exceeded)") == 2)
        group.oom_kill()
        await w.until("restarted", lambda: (d := w.live("worker.1")) is not None and d.id != live.id)
        lines = w.lines("worker.1")
        r15 = lines.index("Error R15 (Memory quota vastly exceeded)")
        # Heroku's order: the usage, R15, the kill, the exit, then the crash
        assert lines[r15 - 1].startswith("Process running mem=1024M(200.0%)")
        assert lines[r15 + 1:r15 + 4] == ["Stopping process with SIGKILL",
                                          f"Process exited with status {SIGKILL_STATUS}",
                                          "State changed from up to crashed"]
        assert lines.count("Error R15 (Memory quota vastly exceeded)") == 1
        assert live.killed_for == "R15"


async def test_a_restarted_dynod_adopts_running_dynos_and_clears_what_it_does_not_know(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    kernel = FakeKernel()
    spawner, cgroups = FakeSpawner(kernel), FakeCgroups(kernel)
    async with world(tmp_path, kernel=kernel, spawner=spawner, cgroups=cgroups) as w:
        deploy(w.ledger, worker=2)
        w.manager.wake()
        await w.until("two workers up", lambda: all(
            (d := w.live(f"worker.{i}")) is not None and d.record.state == DynoState.UP for i in (1, 2)))
        before = {name: w.live(name) for name in ("worker.1", "worker.2")}
        ledger = w.ledger
        # dynod goes away (kill -9): nothing of the manager stops its dynos
        w.manager.closing = True  # (so that leaving this block stops nothing: stop_all has no dynos to stop)
        w.manager.live.clear()
    lost = before["worker.2"]
    assert lost is not None
    spawner.crash(lost.id, status=0)  # one exits while no dynod watches; the spawner keeps its status
    stranger = kernel.fork("other.web.1.ffffff", init=True)  # a dyno the ledger knows nothing of
    spawner._spawned("other.web.1.ffffff", stranger, None)
    spawner.requests.clear()
    async with world(tmp_path, ledger=ledger, kernel=kernel, spawner=spawner, cgroups=cgroups) as w:
        kept = before["worker.1"]
        assert kept is not None
        await w.until("worker.2 replaced", lambda: (d := w.live("worker.2")) is not None and d.id != lost.id
                      and d.record.state == DynoState.UP)
        adopted = w.live("worker.1")
        assert adopted is not None and adopted.id == kept.id and adopted.record.pid == kept.record.pid
        assert adopted.cgroup is cgroups.groups[kept.id]  # its group re-opened: memory watched again
        assert ("spawn", kept.id) not in spawner.requests
        assert ("kill", "other.web.1.ffffff") in spawner.requests and stranger.pid not in kernel.procs
        assert "Process exited with status 0" in w.lines("worker.2")
        assert adopted.record.ip is not None and adopted.record.ip != w.live("worker.2").record.ip  # type: ignore[union-attr]
        assert w.network.pool.statistics()["in_use"] == 2  # its address is taken again, never handed out twice
        assert sorted(r.name for r in w.ledger.list_dynos(APP)) == ["worker.1", "worker.2"]


async def test_the_warm_pool_hands_out_a_forked_dyno_and_refills(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path, warm_pool=2) as w:
        await w.until("two warm dynos", lambda: len(w.manager._warm) == 2)
        warm_ids = {warm.pool_id for warm in w.manager._warm}
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("a worker up", lambda: (d := w.live("worker.1")) is not None and d.record.state == DynoState.UP)
        live = w.live("worker.1")
        assert live is not None
        assigned = [pool_id for op, pool_id in w.spawner.requests if op == "assign"]
        assert len(assigned) == 1 and assigned[0] in warm_ids and ("spawn", live.id) not in w.spawner.requests
        assert isinstance(live.cgroup, FakeCgroup) and live.cgroup.name == live.id  # the warm group, renamed
        assert live.cgroup.limits.memory_max == 1024 * MiB  # with the dyno's limits now, not the pool's
        await w.until("the pool refilled", lambda: len(w.manager._warm) == 2)
        assert [op for op, _ in w.spawner.requests].count("prefork") == 3
        warm = w.manager._warm[0]
        w.spawner.crash(warm.pool_id)  # a warm dyno that dies in the pool is never handed out
        await w.until("replaced in the pool", lambda: warm not in w.manager._warm and len(w.manager._warm) == 2)


async def test_a_taken_warm_dyno_is_replaced_once_it_has_execd(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    # Forking and wiring the replacement takes CPU the start being sped up still needs (on two
    # cores): it waits for that dyno's exec, and at most REFILL_WAIT_S for one that never comes.
    async with world(tmp_path, warm_pool=2) as w:
        await w.until("two warm dynos", lambda: len(w.manager._warm) == 2)
        preforked = [pool_id for op, pool_id in w.spawner.requests if op == "prefork"]
        wired = [pool_id for op, pool_id in w.spawner.requests if op == "wired"]
        assert sorted(wired) == sorted(preforked)  # each told it is wired, so that it addresses its interface now
        assert all(net is not None and net.address == warm.address for warm in w.manager._warm
                   for net in [w.spawner.prepared_nets[warm.pool_id]])
        w.spawner.hold_starts = True
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("its go sent", lambda: any(op == "go" for op, _ in w.spawner.requests))
        await trio.sleep(REFILL_WAIT_S / 2)
        assert [op for op, _ in w.spawner.requests].count("prefork") == 2 and len(w.manager._warm) == 1
        w.spawner.release_starts()
        await w.until("the pool refilled", lambda: len(w.manager._warm) == 2)
        assert [op for op, _ in w.spawner.requests].count("prefork") == 3

        w.spawner.hold_starts = True  # and one whose exec never comes
        w.ledger.set_formation(APP, "worker", quantity=2)
        w.manager.wake()
        await w.until("its go sent", lambda: [op for op, _ in w.spawner.requests].count("go") == 2)
        took = trio.current_time()
        await w.until("the pool refilled", lambda: len(w.manager._warm) == 2)
        assert trio.current_time() - took >= REFILL_WAIT_S * 0.9


async def test_the_warm_pool_stays_empty_where_groups_cannot_be_renamed(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    kernel = FakeKernel()
    async with world(tmp_path, kernel=kernel, cgroups=FakeCgroups(kernel, can_rename=False), warm_pool=2) as w:
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("a worker up", lambda: (d := w.live("worker.1")) is not None and d.record.state == DynoState.UP)
        assert w.manager._warm == [] and "prefork" not in [op for op, _ in w.spawner.requests]


async def test_a_dyno_that_fails_before_it_runs_is_a_crash_with_its_reason(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        w.spawner.fail_exec["run-worker"] = "mount('overlay'): Invalid argument"
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("crashed", lambda: [r.state for r in w.ledger.list_dynos(APP)] == [DynoState.CRASHED])
        assert "Error: the dyno failed to start: mount('overlay'): Invalid argument" in w.lines("worker.1")
        assert "State changed from starting to crashed" in w.lines("worker.1")


async def test_a_warm_dyno_that_exits_before_its_start_hears_back_is_a_crash_not_a_dyno_left_starting(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path, warm_pool=2) as w:
        await w.until("two warm dynos", lambda: len(w.manager._warm) == 2)
        # Its exit reaches the manager before the assign's answer reaches the start: it used to be
        # taken for a warm dyno's, forgotten, and the dyno stayed "starting" with no process.
        w.spawner.fail_assigned["run-worker"] = "layer l0: mount: No such file or directory"
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("crashed", lambda: [r.state for r in w.ledger.list_dynos(APP)] == [DynoState.CRASHED])
        assert ("spawn", w.ledger.list_dynos(APP)[0].id) not in w.spawner.requests  # it was a warm one
        assert "Error: the dyno failed to start: layer l0: mount: No such file or directory" in w.lines("worker.1")
        assert "State changed from starting to crashed" in w.lines("worker.1")
        assert w.manager.watching._early == {}
        del w.spawner.fail_assigned["run-worker"]
        await w.until("restarted and up", lambda: (d := w.live("worker.1")) is not None
                      and d.record.state == DynoState.UP)


async def test_a_spawner_request_that_fails_raises_its_own_error_not_a_group(tmp_path: Path) -> None:
    # dynod's spawner supervisor and the start stage catch SpawnerError: a request's failure
    # wrapped in the nursery's ExceptionGroup passed them by, and a new spawner that broke the
    # pipe of its first hello took dynod down with it (seen in a fresh-clone run).
    from dynod.linux.spawner_client import SpawnerError

    async with world(tmp_path) as w:
        async def broken(spawner: object) -> None:
            await trio.sleep(0)
            raise SpawnerError("the spawner went away: [Errno 32] Broken pipe")

        with pytest.raises(SpawnerError, match="Broken pipe"):
            await w.manager._ask(broken)
        assert await w.manager._ask(lambda spawner: spawner.hello()) == []  # and asks go on


@pytest.mark.parametrize("spawner_wires", [True, False])
async def test_a_build_container_is_wired_by_the_spawner_where_it_can_else_by_dynod(
        tmp_path: Path, clock: trio.testing.MockClock, spawner_wires: bool) -> None:
    async with world(tmp_path) as w:
        w.spawner.makes_veths = spawner_wires
        attached: list[int] = []

        async def attach(pid: int) -> None:
            attached.append(pid)

        spec = {"id": "build.app-1.0001", "hostname": "h", "argv": ["true"], "env": {}, "lower": ["/stack"],
                "uid": 61000, "gid": 61000,
                "net": {"ifname": "eth0", "address": "198.19.255.9", "prefix": 24, "gateway": "198.19.255.1",
                        "on_bridge": "b0b", "bridge": "b0b"}}
        status: list[int | None] = []

        async def build() -> None:
            limits = CgroupLimits(MiB, MiB, 100, 100)
            status.append(await w.manager.run_container(spec, limits, output=lambda data: None, timeout=60,
                                                        attach=attach))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(build)
            await w.until("the build runs", lambda: ("go", spec["id"]) in w.spawner.requests)
            child = w.spawner.children[spec["id"]]
            pid = child.init.pid
            w.spawner.crash(spec["id"], 0)
            for fd in child.out:  # its output ends with it, as a real container's pipes do
                os.close(fd)
            child.out.clear()
        assert status == [0]
        if spawner_wires:  # its veth made as it forked, as a cold dyno's: no netlink call of dynod's
            assert w.spawner.veths == [("198.19.255.9", pid)] and attached == []
        else:
            assert w.spawner.veths == [] and attached == [pid]


def test_a_booting_web_dyno_is_probed_soon_then_less_often() -> None:
    delays = list(itertools.islice(boot_probe_delays(), 40))
    assert delays[0] == BOOT_PROBE_FIRST <= 0.005  # a quick app is seen up within a few ms of its bind
    assert delays == sorted(delays)
    assert max(delays) == delays[-1] == BOOT_PROBE_EVERY  # a slow app: one probe per 50 ms, as before
    for i, delay in enumerate(delays):  # an app is seen up within a tenth of its boot so far
        assert delay <= BOOT_PROBE_FIRST + sum(delays[:i]) / 10 + 1e-9
    assert sum(delays[:34]) < 0.6  # and the growth is over early in a boot
