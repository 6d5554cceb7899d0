"""The scheduler's store: a slot is claimed once, durably, even by two stores on one file; runs are
bounded; the file is private; and the Scheduler's API side checks its input."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from dynod.errors import NotFound, UserError
from dynod.scheduler import ScheduleClock, Scheduler, SchedulerStore
from dynod.scheduler.store import MAX_RUNS


def test_a_slot_is_claimed_once_even_from_a_second_connection(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.sqlite3"
    store = SchedulerStore(path)
    job = store.add_job("a", "every 10 minutes", "echo hi", "standard-1X", True, 100.0)
    assert store.claim(job.id, 600.0)
    assert not store.claim(job.id, 600.0)
    other = SchedulerStore(path)  # a dynod restarted after kill -9 opens the same file
    assert not other.claim(job.id, 600.0)
    assert not other.claim(job.id, 0.0)  # an earlier slot (the clock went back) is not claimable either
    assert other.claim(job.id, 1200.0)
    assert [r.slot for r in other.runs(job.id)] == [600.0, 1200.0]
    assert other.job(job.id).last_slot == 1200.0  # type: ignore[union-attr]
    assert [r.slot for r in other.unstarted()] == [600.0, 1200.0]
    other.record_run(job.id, 600.0, dyno="scheduler.1", outcome="started")
    assert [r.slot for r in other.unstarted()] == [1200.0]
    store.close()
    other.close()


def test_the_file_is_private_and_runs_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.sqlite3"
    store = SchedulerStore(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    job = store.add_job("a", "every 10 minutes", "echo hi", "standard-1X", True, 0.0)
    for n in range(MAX_RUNS + 10):
        assert store.claim(job.id, float(n + 1))
    runs = store.runs(job.id)
    assert len(runs) == MAX_RUNS and runs[-1].slot == MAX_RUNS + 10
    assert store.remove_app("a") == 1 and store.jobs() == [] and store.runs(job.id) == []
    store.close()


def _scheduler(tmp_path: Path, started: list[tuple[str, str, str]], lines: list[tuple[str, str]],
               wall: list[float]) -> Scheduler:
    async def start(app: str, command: str, size: str) -> dict[str, str]:
        started.append((app, command, size))
        return {"name": f"scheduler.{len(started)}"}

    return Scheduler(SchedulerStore(tmp_path / "s.sqlite3"), start_dyno=start,
                     emit=lambda app, message: lines.append((app, message)),
                     clock=ScheduleClock(wall=lambda: wall[0]))


def test_bad_jobs_are_one_clear_line_and_change_nothing(tmp_path: Path) -> None:
    scheduler = _scheduler(tmp_path, [], [], [1767225600.0])
    for cadence, command in (("every 7 minutes", "echo"), ("every 10 minutes", "  "),
                             ("every 10 minutes", "a\x00b"), ("every 10 minutes", "x" * 9000)):
        with pytest.raises(UserError) as err:
            scheduler.add_job("a", cadence, command, "standard-1X", True)
        assert "\n" not in str(err.value)
    assert scheduler.list_jobs("a") == []
    with pytest.raises(NotFound):
        scheduler.remove_job("a", "nope")


async def test_the_scheduler_starts_each_slot_once_and_says_so(tmp_path: Path) -> None:
    started: list[tuple[str, str, str]] = []
    lines: list[tuple[str, str]] = []
    wall = [1767225600.0 + 30]  # 00:00:30
    scheduler = _scheduler(tmp_path, started, lines, wall)
    job = scheduler.add_job("a", "every 10 minutes", "echo hi", "standard-1X", True)
    assert job["next_run"] == "2026-01-01T00:10:00Z"
    async with trio.open_nursery() as nursery:
        scheduler._nursery = nursery
        scheduler.tick()
        assert started == []
        wall[0] = 1767225600.0 + 600.5
        scheduler.tick()
        scheduler.tick()  # the same slot, looked at again
        await trio.testing.wait_all_tasks_blocked()
        assert started == [("a", "echo hi", "standard-1X")]
        wall[0] += 3 * 600 + 120  # dynod "down" over three slots: one late run
        scheduler.tick()
        await trio.testing.wait_all_tasks_blocked()
        assert len(started) == 2
        assert "missed while dynod was down" in lines[-1][1]
    runs = scheduler.store.runs(job["id"])
    assert [(r.dyno, r.outcome) for r in runs] == [("scheduler.1", "started"), ("scheduler.2", "started")]
    assert scheduler.list_jobs("a")[0]["last_run"]["dyno"] == "scheduler.2"
    scheduler.remove_job("a", job["id"][:6])
    assert scheduler.list_jobs("a") == []


async def test_a_run_that_cannot_start_is_logged_and_not_retried(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    wall = [1767225600.0 + 1]

    async def start(app: str, command: str, size: str) -> dict[str, str]:
        raise UserError("a has no deployed code yet: deploy first.")

    scheduler = Scheduler(SchedulerStore(tmp_path / "s.sqlite3"), start_dyno=start,
                          emit=lambda app, message: lines.append((app, message)),
                          clock=ScheduleClock(wall=lambda: wall[0]))
    job = scheduler.add_job("a", "* * * * *", "echo hi", "standard-1X", True)
    async with trio.open_nursery() as nursery:
        scheduler._nursery = nursery
        wall[0] += 60
        scheduler.tick()
        await trio.testing.wait_all_tasks_blocked()
        scheduler.tick()
        await trio.testing.wait_all_tasks_blocked()
    assert [r.outcome for r in scheduler.store.runs(job["id"])] == ["failed: a has no deployed code yet: deploy first."]
    assert "did not start: a has no deployed code yet" in lines[-1][1]


async def test_without_catch_up_a_missed_slot_is_skipped_and_said(tmp_path: Path) -> None:
    started: list[tuple[str, str, str]] = []
    lines: list[tuple[str, str]] = []
    wall = [1767225600.0 + 30]
    scheduler = _scheduler(tmp_path, started, lines, wall)
    job = scheduler.add_job("a", "every 10 minutes", "echo hi", "standard-1X", False)
    async with trio.open_nursery() as nursery:
        scheduler._nursery = nursery
        wall[0] += 2 * 600 + 120  # 00:10 and 00:20 missed; 00:20 is 150 s late
        scheduler.tick()
        scheduler.tick()
        await trio.testing.wait_all_tasks_blocked()
        assert started == []
        assert "skipped the run for 2026-01-01T00:20:00Z" in lines[-1][1] and len(lines) == 2  # added, skipped
        wall[0] = 1767225600.0 + 1800 + 1  # the next slot on time runs
        scheduler.tick()
        await trio.testing.wait_all_tasks_blocked()
        assert len(started) == 1
    assert [r.outcome for r in scheduler.store.runs(job["id"])] == ["skipped", "started"]
    assert scheduler.statistics() == {"jobs": 1, "started": 1, "skipped": 1, "failed": 0}


async def test_a_claim_whose_dyno_never_started_is_reported_on_start_and_not_rerun(tmp_path: Path) -> None:
    """dynod killed between the claim and the dyno's start: the next one says so, runs nothing."""
    store = SchedulerStore(tmp_path / "s.sqlite3")
    slot = 1767225600.0 + 600
    job = store.add_job("a", "every 10 minutes", "echo hi", "standard-1X", True, 1767225600.0)
    assert store.claim(job.id, slot)
    store.close()
    started: list[tuple[str, str, str]] = []
    lines: list[tuple[str, str]] = []
    wall = [slot + 5]
    scheduler = _scheduler(tmp_path, started, lines, wall)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert started == []
    assert "claimed but dynod stopped before its dyno started" in lines[0][1]
    assert scheduler.store.runs(job.id)[0].outcome.startswith("lost")


async def test_a_run_is_stopped_once_its_interval_is_over(tmp_path: Path, autojump_clock: object) -> None:
    """Heroku Scheduler's rule: a run lasts at most its job's interval."""
    stopped: list[tuple[str, str, float]] = []
    lines: list[tuple[str, str]] = []
    wall = [1767225600.0 + 1]
    running = {"scheduler.1"}

    async def start(app: str, command: str, size: str) -> dict[str, str]:
        return {"name": "scheduler.1"}

    async def stop(app: str, name: str) -> None:
        if name not in running:
            raise NotFound(f"No dyno {name} is running")
        running.discard(name)
        stopped.append((app, name, trio.current_time()))

    scheduler = Scheduler(SchedulerStore(tmp_path / "s.sqlite3"), start_dyno=start, stop_dyno=stop,
                          emit=lambda app, message: lines.append((app, message)),
                          clock=ScheduleClock(wall=lambda: wall[0]))
    scheduler.add_job("a", "every 10 minutes", "sleep 3600", "standard-1X", True)
    async with trio.open_nursery() as nursery:
        scheduler._nursery = nursery
        begin = trio.current_time()
        wall[0] += 600
        scheduler.tick()
    assert [(a, n) for a, n, _t in stopped] == [("a", "scheduler.1")]
    assert stopped[0][2] - begin == pytest.approx(599)  # the slot was found 1 s late: its end is 599 s on
    assert "ran past its interval (600 s): stopping it" in lines[-1][1]


async def test_a_restarted_dynod_takes_over_the_limits_of_adopted_runs(tmp_path: Path, autojump_clock: object) -> None:
    store = SchedulerStore(tmp_path / "s.sqlite3")
    job = store.add_job("a", "every 10 minutes", "sleep 3600", "standard-1X", True, 1767225600.0)
    for slot, name in ((1767225600.0 + 600, "scheduler.1"), (1767225600.0 + 1200, "scheduler.2")):
        assert store.claim(job.id, slot)
        store.record_run(job.id, slot, dyno=name, outcome="started")
    store.close()
    stopped: list[tuple[str, float]] = []
    running = {"scheduler.1", "scheduler.2"}
    wall = [1767225600.0 + 1500]  # scheduler.1's interval ended at 1200, scheduler.2's ends at 1800

    async def stop(app: str, name: str) -> None:
        if name not in running:
            raise NotFound(f"No dyno {name} is running")
        running.discard(name)
        stopped.append((name, trio.current_time()))

    async def start(app: str, command: str, size: str) -> dict[str, str]:
        return {"name": "scheduler.3"}

    scheduler = Scheduler(SchedulerStore(tmp_path / "s.sqlite3"), start_dyno=start, stop_dyno=stop,
                          emit=lambda app, message: None, clock=ScheduleClock(wall=lambda: wall[0]))
    begin = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(301)
        nursery.cancel_scope.cancel()
    assert [(n, round(t - begin)) for n, t in stopped] == [("scheduler.1", 0), ("scheduler.2", 300)]
