"""Heroku's runtime-metrics and memory-error lines, sans I/O: numbers in, log messages out.

The daemon reads a dyno's cgroup every ``[logs] metrics_interval`` seconds and emits what these
return as ``dynod[<dyno>]`` lines. Formats are Heroku's log-runtime-metrics ones, field for
field (Dev Center, "log-runtime-metrics"), in the order Heroku writes them: first the load line,
then the memory line::

    source=web.1 dyno=dynod.myapp.web.1.3f2a sample#load_avg_1m=0.00 sample#load_avg_5m=0.00 ...
    source=web.1 dyno=... sample#memory_total=21.00MB sample#memory_rss=21.22MB
        sample#memory_cache=0.00MB sample#memory_swap=0.00MB sample#memory_pgpgin=348836pages
        sample#memory_pgpgout=343403pages sample#memory_quota=512.00MB

"MB" is Heroku's name for MiB (a 512 MB dyno reports memory_quota=512.00MB for 512 MiB), and
memory_total is rss + cache + swap, as in Heroku's own samples.
"""

from __future__ import annotations

from collections.abc import Mapping

MiB = 1024 * 1024

_MEMORY_KEYS = ("memory_rss", "memory_cache", "memory_swap", "memory_pgpgin", "memory_pgpgout",
                "memory_quota")
_LOAD_KEYS = ("load_avg_1m", "load_avg_5m", "load_avg_15m")


def _mb(value: float) -> str:
    return f"{value / MiB:.2f}MB"


def _head(dyno: str, stats: Mapping[str, object]) -> str:
    dyno_id = stats.get("dyno_id")
    return f"source={dyno}" + (f" dyno={dyno_id}" if dyno_id else "")


def memory_total(stats: Mapping[str, float]) -> float:
    total = stats.get("memory_total")
    if total is not None:
        return total
    return stats["memory_rss"] + stats["memory_cache"] + stats["memory_swap"]


def load_sample(dyno: str, stats: Mapping[str, float]) -> str | None:
    """The load line, or None when the stats carry no load averages."""
    if "load_avg_1m" not in stats:
        return None
    fields = " ".join(f"sample#{key}={float(stats[key]):.2f}" for key in _LOAD_KEYS if key in stats)
    return f"{_head(dyno, stats)} {fields}"


def memory_sample(dyno: str, stats: Mapping[str, float]) -> str:
    missing = [key for key in _MEMORY_KEYS if key not in stats]
    if missing:
        raise ValueError(f"memory sample for {dyno} lacks {', '.join(missing)}")
    return (
        f"{_head(dyno, stats)}"
        f" sample#memory_total={_mb(memory_total(stats))}"
        f" sample#memory_rss={_mb(stats['memory_rss'])}"
        f" sample#memory_cache={_mb(stats['memory_cache'])}"
        f" sample#memory_swap={_mb(stats['memory_swap'])}"
        f" sample#memory_pgpgin={int(stats['memory_pgpgin'])}pages"
        f" sample#memory_pgpgout={int(stats['memory_pgpgout'])}pages"
        f" sample#memory_quota={_mb(stats['memory_quota'])}"
    )


def format_sample(dyno: str, stats: Mapping[str, float]) -> str:
    """Heroku's runtime-metrics lines for one sample, newline-separated (LogStream.emit makes
    each its own log line).

    ``stats``: memory_rss, memory_cache, memory_swap, memory_quota in bytes; memory_pgpgin and
    memory_pgpgout in pages (cgroup memory.stat's pgpgin/pgpgout); optionally memory_total in
    bytes (default rss + cache + swap), load_avg_1m/5m/15m, and dyno_id (the ``dyno=`` field).
    """
    load = load_sample(dyno, stats)
    memory = memory_sample(dyno, stats)
    return memory if load is None else f"{load}\n{memory}"


def _process_running(total: float, quota: float) -> str:
    return f"Process running mem={int(total // MiB)}M({total / quota * 100:.1f}%)"


def r14_line(memory_total_bytes: float, quota_bytes: float) -> str:
    """What Heroku logs when a dyno is over its memory quota: the usage line, then R14."""
    return f"{_process_running(memory_total_bytes, quota_bytes)}\nError R14 (Memory quota exceeded)"


def r15_line(memory_total_bytes: float, quota_bytes: float) -> str:
    """Over the hard limit ([dynos] hard_limit_ratio x quota): the usage line, R15, then the kill."""
    return (f"{_process_running(memory_total_bytes, quota_bytes)}\n"
            "Error R15 (Memory quota vastly exceeded)\nStopping process with SIGKILL")
