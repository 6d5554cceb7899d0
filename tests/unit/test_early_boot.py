"""Early boot (dynod/manager/early_boot.py) on the fakes of test_manager_runtime.py: a deploy's
dynos booted from its tree before its release, taken by the release that names the slug packed
from that tree, and killed without a trace whenever they do not fit."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from dynod.manager.early_boot import EARLY_MAX, EarlyBoot
from dynod.model import DynoState

from .fake_runtime import FakeCgroup
from .test_manager_runtime import APP, World, clock, deploy, world

__all__ = ["clock"]  # the fixture: trio's MockClock

TYPES = {"worker": "run-worker"}


def release(w: World, slug_id: str, config: dict[str, str] | None = None, types: dict[str, str] = TYPES) -> int:
    return w.ledger.create_release(APP, slug_id=slug_id, config=config or {}, process_types=types,
                                   description="Deploy").version


async def booted(w: World, tree: Path, types: dict[str, str] = TYPES) -> EarlyBoot:
    boot = w.manager.boot_early(APP, tree, types)
    assert boot is not None
    await w.until("the early dynos started", boot.booted.is_set)
    return boot


def spawned(w: World) -> list[str]:
    return [dyno for op, dyno in w.spawner.requests if op == "spawn"]


async def on_v1(w: World, **types: int) -> None:
    deploy(w.ledger, **types)  # v1 on slug1
    w.manager.wake()
    await w.until("v1 up", lambda: all(
        (d := w.live(f"{t}.{n}")) is not None and d.record.state == DynoState.UP
        for t, q in types.items() for n in range(1, q + 1)))


async def slot_up_on(w: World, version: int, name: str = "worker.1") -> None:
    await w.until(f"{name} up on v{version}", lambda: (d := w.live(name)) is not None
                  and d.record.release == version and d.record.state == DynoState.UP)


async def test_an_early_dyno_is_nobodys_until_the_release_of_its_tree_takes_it(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        await on_v1(w, worker=1)
        old = w.live("worker.1")
        assert old is not None
        lines_before = list(w.lines("worker.1"))
        boot = await booted(w, tmp_path / "tree")
        [early] = boot.dynos
        assert w.spawner.children[early.id].spec.lower[0] == str(tmp_path / "tree")  # the build's tree
        # Running, and nobody's: not in the ledger, ps or the manager's table, nothing logged.
        assert w.spawner.children[early.id].started
        assert early.id not in {d.id for d in w.ledger.list_dynos(APP)}
        assert early.id not in w.manager.live and w.live("worker.1") is old
        assert w.lines("worker.1") == lines_before
        boot.packed("slug2")
        version = release(w, "slug2")
        starts = len(spawned(w))
        await boot.settle()
        # Taken by the release's own reconcile pass: the same process, a dyno of v2 now.
        assert w.manager.live[early.id] is early and early.record.release == version
        [record] = [d for d in w.ledger.list_dynos(APP) if d.id == early.id]
        assert record.release == version and record.pid == early.record.pid
        assert len(spawned(w)) == starts  # nothing else started for worker.1
        await w.until("the old one gone", old.exited.is_set)
        await w.until("the new one up", lambda: early.record.state == DynoState.UP)
        assert "Starting process with command `run-worker`" in w.lines("worker.1")[len(lines_before):]
        assert not w.manager.early and not w.manager.early_boots


async def test_a_config_change_during_the_pack_means_a_fresh_dyno_and_the_early_one_killed(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        await on_v1(w, worker=1)
        boot = await booted(w, tmp_path / "tree")
        [early] = boot.dynos
        group = early.cgroup
        boot.packed("slug2")
        version = release(w, "slug2", config={"FEATURE": "on"})  # its dyno must see FEATURE
        await boot.settle()
        await w.until("the early one gone", early.exited.is_set)
        assert isinstance(group, FakeCgroup) and group.removed
        await slot_up_on(w, version)
        fresh = w.live("worker.1")
        assert fresh is not None and fresh.id != early.id
        assert w.spawner.children[fresh.id].spec.env["FEATURE"] == "on"
        assert early.id not in {d.id for d in w.ledger.list_dynos(APP)}
        assert not any(early.id in line.message for line in w.logs.lines)
        assert w.network.pool.statistics()["in_use"] == 1  # the fresh dyno's address alone


async def test_a_failed_pack_ends_every_early_dyno_and_leaves_v1_alone(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        await on_v1(w, worker=2)
        old = {w.live("worker.1"), w.live("worker.2")}
        lines = len(w.logs.lines)
        boot = await booted(w, tmp_path / "tree")
        assert len(boot.dynos) == 2
        early = list(boot.dynos)
        await boot.end()  # the deploy's pack failed: the tree is removed next, so this waits
        assert all(d.exited.is_set() for d in early)
        assert all(isinstance(d.cgroup, FakeCgroup) and d.cgroup.removed for d in early)
        assert not w.manager.early and not w.manager.early_boots
        assert {w.live("worker.1"), w.live("worker.2")} == old and all(not d.stopping for d in old if d)
        assert len(w.logs.lines) == lines  # nothing of them in the app's log
        assert {d.id for d in w.ledger.list_dynos(APP)} == {d.id for d in old if d}


async def test_an_early_dyno_that_dies_is_forgotten_and_its_slot_starts_as_usual(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        await on_v1(w, worker=1)
        boot = await booted(w, tmp_path / "tree")
        [early] = boot.dynos
        w.kernel.end_dyno(early.id, 1)  # its app crashed while it booted
        await w.until("forgotten", lambda: early.id not in w.manager.early)
        assert early.exited.is_set() and not w.manager.restart_at
        boot.packed("slug2")
        version = release(w, "slug2")
        await boot.settle()
        await slot_up_on(w, version)
        assert w.live("worker.1").id != early.id  # type: ignore[union-attr]


async def test_what_is_never_booted_early(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        await on_v1(w, worker=1)
        tree = tmp_path / "tree"
        # A release phase runs before any dyno of the new code (a migration, say).
        assert w.manager.boot_early(APP, tree, {**TYPES, "release": "migrate"}) is None
        # A type the formation does not run (web aside: see the first deploy's test), or runs at 0.
        assert w.manager.boot_early(APP, tree, {"clock": "run-clock"}) is None
        w.ledger.set_formation(APP, "worker", quantity=0)
        assert w.manager.boot_early(APP, tree, TYPES) is None
        # At most EARLY_MAX of a big formation; the rest start with the release, as before.
        w.ledger.set_formation(APP, "worker", quantity=EARLY_MAX + 3)
        boot = await booted(w, tree)
        assert sorted(d.name for d in boot.dynos) == [f"worker.{n}" for n in range(1, EARLY_MAX + 1)]
        assert w.manager.boot_early(APP, tree, TYPES) is None  # one deploy of an app at a time
        await boot.end()


async def test_a_dynod_that_stops_ends_its_early_dynos(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        await on_v1(w, worker=1)
        boot = await booted(w, tmp_path / "tree")
        [early] = boot.dynos
        await w.manager.stop_all()
        assert early.exited.is_set() and not w.manager.early
        assert isinstance(early.cgroup, FakeCgroup) and early.cgroup.removed


async def test_a_first_deploy_boots_the_web_dyno_its_release_will_scale_to(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        w.ledger.create_app(APP)  # v1 has no slug and declares nothing: no formation yet
        w.ledger.create_release(APP, slug_id=None, config={}, process_types={}, description="Initial release")
        boot = await booted(w, tmp_path / "tree", {"web": "run-web", "worker": "run-worker"})
        assert [d.name for d in boot.dynos] == ["web.1"]  # web goes to 1 at the release; workers stay at 0
        boot.packed("slug2")
        version = release(w, "slug2", types={"web": "run-web", "worker": "run-worker"})
        assert [(f.type, f.quantity) for f in w.ledger.get_formation(APP)] == [("web", 1), ("worker", 0)]
        [early] = boot.dynos
        await boot.settle()
        assert w.manager.live.get(early.id) is early and early.record.release == version


async def test_an_app_being_destroyed_takes_no_early_dyno(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        await on_v1(w, worker=1)
        boot = await booted(w, tmp_path / "tree")
        [early] = boot.dynos
        boot.packed("slug2")
        release(w, "slug2")
        with w.manager.retiring_app(APP):  # apps:destroy while the deploy settles
            await boot.settle()
        assert early.id not in w.manager.live and early.id not in {d.id for d in w.ledger.list_dynos(APP)}
        await w.until("killed", early.exited.is_set)


async def test_stop_all_kills_an_early_dyno_no_boot_holds_any_more(
        tmp_path: Path, clock: trio.testing.MockClock) -> None:
    async with world(tmp_path) as w:
        await on_v1(w, worker=1)
        boot = await booted(w, tmp_path / "tree")
        [early] = boot.dynos
        del w.manager.early_boots[APP]  # as a deploy cancelled half way through its end() leaves it
        await w.manager.stop_all()
        assert early.exited.is_set() and not w.manager.early
