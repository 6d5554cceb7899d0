"""What the memory watch decides, pure: when R14 is logged again, whether an OOM kill is new
news, and what usage an R15 line reports.

Heroku (Dev Center, "Memory quota exceeded"): a dyno over its quota logs R14 and goes on
(swapping); Heroku repeats it with each runtime-metrics sample, about every 20 s, not on every page
fault. A dyno that the kernel OOM-kills at the hard limit logs R15 and is restarted; its usage line
shows what crossed the line, since the usage read after the kill has already dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

R14_EVERY = 20.0  # seconds between two R14 lines of one dyno


def r14_due(*, total: int, quota: int, last_r14: float, now: float, every: float = R14_EVERY) -> bool:
    """True when a dyno using ``total`` bytes of its ``quota`` should log R14 now."""
    return total > quota and now - last_r14 >= every


@dataclass(frozen=True, slots=True)
class OomVerdict:
    seen: int  # the OOM-kill count to remember from now on
    report_r15: bool  # log R15 (and kill the dyno) now


def oom_verdict(*, kills: int, seen: int, killed_for: str) -> OomVerdict:
    """The cgroup's OOM-kill counter read as ``kills`` after ``seen`` was last remembered.

    A rise is an R15, once: not again if dynod already reported it or killed the dyno for
    another reason itself (R10), since its last lines already say why it died.
    """
    if kills <= seen:
        return OomVerdict(seen, False)
    return OomVerdict(kills, not killed_for)


def r15_usage(*, total: int | None, quota: int, hard_limit_ratio: float) -> int:
    """The usage an R15 line shows: at least the hard limit the dyno crossed."""
    return max(total or 0, int(quota * hard_limit_ratio))
