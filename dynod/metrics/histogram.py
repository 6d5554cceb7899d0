"""Response times as a fixed log-bucket histogram: bounded memory per minute, mergeable, sans I/O.

The router logs whole milliseconds. Values below ``EXACT`` ms get a bucket each (exact); above,
bucket ``k`` covers ``[EXACT * GROWTH**k, EXACT * GROWTH**(k+1))``. A percentile is the bucket
holding its rank (nearest-rank definition), reported as the bucket's midpoint and never above the
largest value seen, so its relative error is at most ``(GROWTH - 1) / (GROWTH + 1)``: 4.8% for
GROWTH 1.1 (docs/metrics.md). Everything up to ``LIMIT`` ms fits in 121 buckets; a histogram is a
sparse dict of at most that many counts whatever the traffic, and merging two (downsampling ten
minutes into one point) is adding counts, which keeps the same error bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

EXACT = 16  # ms: below this, one bucket per millisecond
GROWTH = 1.1
LIMIT = 600_000  # ms: anything slower lands in the last bucket (the router gives up at 30 s anyway)
RELATIVE_ERROR = (GROWTH - 1) / (GROWTH + 1)
_LOG_GROWTH = math.log(GROWTH)
LAST_BUCKET = EXACT + int(math.log(LIMIT / EXACT) / _LOG_GROWTH)


def bucket_of(ms: float) -> int:
    if ms < EXACT:
        return max(0, int(ms))
    return min(LAST_BUCKET, EXACT + int(math.log(ms / EXACT) / _LOG_GROWTH))


def bucket_bounds(index: int) -> tuple[float, float]:
    """[low, high) of a bucket, in ms."""
    if index < EXACT:
        return float(index), float(index + 1)
    k = index - EXACT
    return EXACT * GROWTH**k, EXACT * GROWTH ** (k + 1)


def _representative(index: int) -> float:
    if index < EXACT:
        return float(index)
    low, high = bucket_bounds(index)
    return (low + high) / 2


@dataclass(slots=True)
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0  # sum of the values, for the mean
    max: float = 0.0

    def add(self, ms: float, times: int = 1) -> None:
        if ms < 0 or math.isnan(ms):
            raise ValueError(f"a response time must be 0 ms or more, not {ms!r}")
        index = bucket_of(ms)
        self.counts[index] = self.counts.get(index, 0) + times
        self.count += times
        self.total += ms * times
        self.max = max(self.max, ms)

    def merge(self, other: Histogram) -> None:
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float | None:
        """The p-th percentile (0 < p <= 100) by nearest rank; None without values."""
        if not 0 < p <= 100:
            raise ValueError(f"a percentile is above 0 and at most 100, not {p!r}")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(_representative(index), self.max)
        return self.max  # unreachable while counts add up to count

    def percentiles(self, ps: tuple[float, ...]) -> list[float | None]:
        """Several percentiles in one pass over the buckets (``ps`` ascending)."""
        if self.count == 0:
            return [None] * len(ps)
        ranks = [max(1, math.ceil(p / 100 * self.count)) for p in ps]
        found: list[float | None] = []
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            while len(found) < len(ranks) and seen >= ranks[len(found)]:
                found.append(min(_representative(index), self.max))
            if len(found) == len(ranks):
                break
        return found + [self.max] * (len(ranks) - len(found))

    def mean(self) -> float | None:
        return None if self.count == 0 else self.total / self.count

    def to_json(self) -> dict[str, object]:
        return {"b": {str(k): v for k, v in sorted(self.counts.items())}, "n": self.count,
                "sum": self.total, "max": self.max}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Histogram:
        raw = data.get("b") or {}
        assert isinstance(raw, dict)
        counts = {int(k): int(v) for k, v in raw.items()}
        return cls(counts, int(data.get("n", 0)), float(data.get("sum", 0.0)),  # type: ignore[arg-type]
                   float(data.get("max", 0.0)))  # type: ignore[arg-type]
