"""Runtime-metrics lines in Heroku's log-runtime-metrics format, and R14/R15."""

import re

import pytest

from dynod.logplex.metrics import MiB, format_sample, r14_line, r15_line

STATS = {
    "memory_rss": 21.22 * MiB,
    "memory_cache": 0.0,
    "memory_swap": 0.0,
    "memory_pgpgin": 348836,
    "memory_pgpgout": 343403,
    "memory_quota": 512 * MiB,
    "load_avg_1m": 2.46,
    "load_avg_5m": 1.06,
    "load_avg_15m": 0.99,
}

# Heroku's documented lines, minus its dyno= field (given here only when the daemon passes one).
HEROKU_LOAD = "source=web.1 sample#load_avg_1m=2.46 sample#load_avg_5m=1.06 sample#load_avg_15m=0.99"
HEROKU_MEMORY = ("source=web.1 sample#memory_total=21.22MB sample#memory_rss=21.22MB "
                 "sample#memory_cache=0.00MB sample#memory_swap=0.00MB sample#memory_pgpgin=348836pages "
                 "sample#memory_pgpgout=343403pages sample#memory_quota=512.00MB")


def test_sample_is_heroku_load_line_then_memory_line():
    assert format_sample("web.1", STATS).split("\n") == [HEROKU_LOAD, HEROKU_MEMORY]


def test_dyno_field_follows_source_when_given():
    lines = format_sample("web.1", dict(STATS, dyno_id="dynod.myapp.web.1.3f2a")).split("\n")
    assert all(line.startswith("source=web.1 dyno=dynod.myapp.web.1.3f2a sample#") for line in lines)


def test_memory_total_is_rss_cache_swap_unless_given():
    stats = dict(STATS, memory_rss=429.68 * MiB, memory_cache=0.48 * MiB, memory_swap=160.12 * MiB)
    assert "sample#memory_total=590.28MB" in format_sample("web.4", stats)
    assert "sample#memory_total=1.00MB" in format_sample("web.4", dict(stats, memory_total=MiB))


def test_without_load_only_the_memory_line():
    stats = {k: v for k, v in STATS.items() if not k.startswith("load")}
    assert format_sample("run.1", stats) == HEROKU_MEMORY.replace("web.1", "run.1")


def test_every_value_has_heroku_units():
    memory = format_sample("web.1", STATS).split("\n")[1]
    for field in re.findall(r"sample#(\w+)=(\S+)", memory):
        name, value = field
        unit = r"\d+pages" if name in ("memory_pgpgin", "memory_pgpgout") else r"\d+\.\d\dMB"
        assert re.fullmatch(unit, value), field


def test_missing_memory_field_is_a_programming_error():
    with pytest.raises(ValueError, match="memory_quota"):
        format_sample("web.1", {k: v for k, v in STATS.items() if k != "memory_quota"})


def test_r14_is_usage_then_error():
    assert r14_line(590.29 * MiB, 512 * MiB).split("\n") == [
        "Process running mem=590M(115.3%)", "Error R14 (Memory quota exceeded)"]


def test_r15_adds_the_kill():
    assert r15_line(1100 * MiB, 512 * MiB).split("\n") == [
        "Process running mem=1100M(214.8%)",
        "Error R15 (Memory quota vastly exceeded)",
        "Stopping process with SIGKILL",
    ]
