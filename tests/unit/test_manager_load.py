"""A dyno's CPU load: its runnable tasks counted from /proc, damped as the kernel damps its
loadavg, and carried by the runtime-metrics lines into the metrics a user charts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dynod.linux.load import runnable_tasks, task_state
from dynod.logplex.metrics import format_sample
from dynod.manager.load_average import SAMPLE_EVERY, LoadAverage
from dynod.metrics.collector import Metrics
from dynod.metrics.observe import RuntimeLoad, RuntimeSample, observe

MB = 1024 * 1024
MEMORY = {"memory_rss": 100 * MB, "memory_cache": 0, "memory_swap": 0, "memory_pgpgin": 1,
          "memory_pgpgout": 1, "memory_quota": 512 * MB}


def test_a_steady_load_converges_on_its_task_count() -> None:
    load = LoadAverage()
    now = 0.0
    for _ in range(int(3600 / SAMPLE_EVERY)):  # an hour with two tasks always runnable
        now += SAMPLE_EVERY
        load.fold(2, now)
    assert load.avg_1m == pytest.approx(2, abs=1e-6)
    assert load.avg_5m == pytest.approx(2, abs=1e-3)
    assert load.avg_15m == pytest.approx(2, rel=0.02)


def test_one_minute_of_load_gives_the_kernels_figures() -> None:
    # 12 samples of one runnable task, 5 s apart: 1 - e**(-60/window) for each window.
    load = LoadAverage()
    for i in range(1, 13):
        load.fold(1, i * SAMPLE_EVERY)
    assert load.avg_1m == pytest.approx(1 - math.exp(-1), rel=1e-9)
    assert load.avg_5m == pytest.approx(1 - math.exp(-60 / 300), rel=1e-9)
    assert load.avg_15m == pytest.approx(1 - math.exp(-60 / 900), rel=1e-9)
    assert load.avg_1m > load.avg_5m > load.avg_15m > 0


def test_an_idle_dyno_decays_and_a_late_sample_counts_its_real_gap() -> None:
    busy, late = LoadAverage(), LoadAverage()
    for load in (busy, late):
        for i in range(1, 13):
            load.fold(4, i * SAMPLE_EVERY)
    before = busy.avg_1m
    for i in range(13, 25):
        busy.fold(0, i * SAMPLE_EVERY)  # a minute idle
    assert busy.avg_1m == pytest.approx(before * math.exp(-1), rel=1e-9)
    late.fold(0, 24 * SAMPLE_EVERY)  # the same minute in one late sample: the same decay
    assert late.avg_1m == pytest.approx(busy.avg_1m, rel=1e-9)


def test_a_clock_step_back_is_ignored_and_negative_counts_refused() -> None:
    load = LoadAverage()
    load.fold(3, 100.0)
    first = load.avg_1m
    load.fold(3, 90.0)
    assert load.avg_1m == first and load.sampled_at == 100.0
    with pytest.raises(ValueError, match="never negative"):
        load.fold(-1, 200.0)
    assert load.sample() == {"load_avg_1m": load.avg_1m, "load_avg_5m": load.avg_5m, "load_avg_15m": load.avg_15m}


@pytest.mark.parametrize(("line", "state"), [
    ("42 (python3) R 1 42 42 0 -1", "R"),
    ("42 (my app) S 1 42", "S"),
    ("42 (a) R (b)) D 1 42", "D"),  # a command name that fakes a state: the last ")" counts
    ("42 (x) Z 1", "Z"),
    ("garbage", ""),
    ("42 (x)", ""),
])
def test_task_state_is_read_after_the_last_parenthesis(line: str, state: str) -> None:
    assert task_state(line) == state


def _proc(root: Path, tasks: dict[int, dict[int, str]]) -> None:
    for pid, threads in tasks.items():
        for tid, state in threads.items():
            d = root / str(pid) / "task" / str(tid)
            d.mkdir(parents=True)
            (d / "stat").write_text(f"{tid} (worker) {state} 1 {pid} {pid} 0 -1\n")


def test_runnable_tasks_counts_running_and_uninterruptible_threads(tmp_path: Path) -> None:
    _proc(tmp_path, {10: {10: "S", 11: "R", 12: "R"}, 20: {20: "D"}, 30: {30: "S", 31: "Z"}})
    assert runnable_tasks([10, 20, 30], proc=str(tmp_path)) == 3
    assert runnable_tasks([30], proc=str(tmp_path)) == 0
    assert runnable_tasks([99, 10], proc=str(tmp_path)) == 2  # a process gone meanwhile does not count


def test_runnable_tasks_sees_this_busy_thread() -> None:
    import os
    assert runnable_tasks([os.getpid()]) >= 1  # the reading thread itself is running


def test_the_load_line_parses_and_joins_its_memory_line(tmp_path: Path) -> None:
    lines = format_sample("web.1", {**MEMORY, "load_avg_1m": 1.5, "load_avg_5m": 0.5, "load_avg_15m": 0.25}).split("\n")
    assert observe("dynod", "web.1", lines[0]) == RuntimeLoad("web", "web.1", 1.5)
    assert observe("dynod", "web.1", lines[1]) == RuntimeSample("web", "web.1", 100 * MB, 0, 100 * MB, 512 * MB, None)
    for bad in ("nan", "-1", "inf", "x"):
        assert observe("dynod", "web.1", f"source=web.1 sample#load_avg_1m={bad}") is None
    metrics = Metrics(tmp_path / "m.sqlite3", clock=lambda: 1_800_000_000.0)
    metrics.observe_messages("a", "dynod", "web.1", lines)
    lines = format_sample("web.1", {**MEMORY, "load_avg_1m": 2.5, "load_avg_5m": 0.5, "load_avg_15m": 0.25})
    metrics.observe_messages("a", "dynod", "web.1", lines.split("\n"))
    metrics.observe_messages("a", "dynod", "web.1", format_sample("web.1", MEMORY).split("\n"))  # no load
    point = metrics.series("a", "web", 600)["points"][-1]
    assert point["load"] == {"mean": 2.0, "max": 2.5}
    assert metrics._load_next == {}  # each load line was taken by its memory line
