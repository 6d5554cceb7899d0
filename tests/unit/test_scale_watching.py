"""The watch stage's per-dyno kernel reads stay off trio's thread (issue 16, cost growth): a v1
memory watch's registration waits out an RCU grace period (8-16 ms), and the metrics pass reads two
cgroup files per dyno; on the event loop's thread either stalls the API and every start once per
dyno. Run on the fakes of fake_runtime.py, as test_manager_runtime.py does."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from dynod.linux.cgroups import MemoryStats, MemoryWatch
from dynod.model import DynoState, MiB
from dynod.settings import LogSettings

from .fake_runtime import FakeCgroup
from .test_manager_runtime import deploy, world


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)


def _up(w, name: str) -> bool:  # type: ignore[no-untyped-def]
    live = w.live(name)
    return live is not None and live.record.state == DynoState.UP


async def test_the_memory_watch_is_registered_in_a_worker_thread_and_still_reports_r14(
        tmp_path: Path, clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    registered_on: list[int] = []
    plain = FakeCgroup.watch_memory

    def watch_memory(self: FakeCgroup) -> MemoryWatch:
        registered_on.append(threading.get_ident())
        return plain(self)

    monkeypatch.setattr(FakeCgroup, "watch_memory", watch_memory)
    async with world(tmp_path) as w:
        deploy(w.ledger, worker=2)
        w.manager.wake()
        await w.until("two workers up", lambda: _up(w, "worker.1") and _up(w, "worker.2"))
        await w.until("both watches registered", lambda: len(registered_on) == 2)
        assert threading.get_ident() not in registered_on
        live = w.live("worker.1")
        assert live is not None and isinstance(live.cgroup, FakeCgroup)
        live.cgroup.use_memory(600 * MiB)  # over the 512 MiB quota: the watch registered in the thread wakes
        await w.until("R14", lambda: any("Error R14" in line for line in w.lines("worker.1")))
        assert not any("Error R14" in line for line in w.lines("worker.2"))


async def test_metrics_read_every_dyno_in_a_worker_thread_and_skip_a_dyno_whose_group_went(
        tmp_path: Path, clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    read_on: list[int] = []
    gone: set[str] = set()
    plain = FakeCgroup.memory_stats

    def memory_stats(self: FakeCgroup) -> MemoryStats:
        read_on.append(threading.get_ident())
        if self.name in gone:
            raise FileNotFoundError(f"cgroup {self.name} is gone")
        return plain(self)

    monkeypatch.setattr(FakeCgroup, "memory_stats", memory_stats)
    async with world(tmp_path) as w:
        deploy(w.ledger, worker=3)
        w.manager.wake()
        await w.until("three workers up", lambda: all(_up(w, f"worker.{i}") for i in (1, 2, 3)))
        broken = w.live("worker.2")
        assert broken is not None
        gone.add(broken.id)
        w.manager.settings = replace(w.manager.settings, logs=LogSettings(metrics_interval=20.0))
        w.manager.start_soon(w.manager.watching.metrics)
        samples = lambda name: [x for x in w.lines(name) if "sample#memory_total" in x]  # noqa: E731
        await w.until("a sample of worker.1 and worker.3", lambda: samples("worker.1") and samples("worker.3"))
        assert "sample#memory_total=10.00MB" in samples("worker.1")[0]
        assert samples("worker.2") == []
        assert read_on and threading.get_ident() not in read_on


async def test_an_oom_kill_while_the_watch_registers_is_still_an_r15(
        tmp_path: Path, clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = FakeCgroup.watch_memory

    def watch_memory(self: FakeCgroup) -> MemoryWatch:
        self.ooms += 1  # the kernel's OOM killer strikes while the worker thread registers
        return plain(self)

    monkeypatch.setattr(FakeCgroup, "watch_memory", watch_memory)
    async with world(tmp_path) as w:
        deploy(w.ledger, worker=1)
        w.manager.wake()
        await w.until("worker up", lambda: _up(w, "worker.1"))
        live = w.live("worker.1")
        assert live is not None and isinstance(live.cgroup, FakeCgroup)
        await w.until("its watch registered", lambda: live.cgroup is not None and live.cgroup.watches)
        live.cgroup.use_memory(1100 * MiB)  # the next memory event
        # virtual seconds; an R15 comes at once or never (each turn of the wait costs real time)
        await w.until("R15", lambda: any("Error R15" in line for line in w.lines("worker.1")), timeout=60)
