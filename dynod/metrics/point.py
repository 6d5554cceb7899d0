"""One time slot of one app's process type: every figure Heroku Metrics draws, mergeable. Sans I/O.

A ``Point`` is built from observations during its minute, stored as JSON, and merged with its
neighbours when minutes are downsampled into coarser slots: counts add, histograms merge (same
percentile error), memory keeps the largest value, the sum and the sample count per dyno (so the
mean stays a true mean). Its size is bounded: at most ``histogram.LAST_BUCKET`` buckets, one
entry per status class and per H/R code, one per dyno of the type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .histogram import Histogram
from .observe import DynoChange, DynoError, RouterRequest, RuntimeSample

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
MAX_DYNOS = 100  # per type and slot: Heroku's scale limit per process type
MAX_CODES = 64


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


@dataclass(slots=True)
class DynoMemory:
    samples: int = 0
    rss_sum: float = 0.0
    rss_max: float = 0.0
    swap_max: float = 0.0
    total_max: float = 0.0
    quota: float = 0.0
    load_sum: float = 0.0
    load_samples: int = 0
    load_max: float = 0.0

    def add(self, sample: RuntimeSample) -> None:
        self.samples += 1
        self.rss_sum += sample.rss
        self.rss_max = max(self.rss_max, sample.rss)
        self.swap_max = max(self.swap_max, sample.swap)
        self.total_max = max(self.total_max, sample.total)
        self.quota = sample.quota
        if sample.load_1m is not None:
            self.load_samples += 1
            self.load_sum += sample.load_1m
            self.load_max = max(self.load_max, sample.load_1m)

    def merge(self, other: DynoMemory) -> None:
        self.samples += other.samples
        self.rss_sum += other.rss_sum
        self.rss_max = max(self.rss_max, other.rss_max)
        self.swap_max = max(self.swap_max, other.swap_max)
        self.total_max = max(self.total_max, other.total_max)
        self.quota = other.quota or self.quota
        self.load_samples += other.load_samples
        self.load_sum += other.load_sum
        self.load_max = max(self.load_max, other.load_max)

    def to_json(self) -> list[float]:
        return [self.samples, self.rss_sum, self.rss_max, self.swap_max, self.total_max, self.quota,
                self.load_sum, self.load_samples, self.load_max]

    @classmethod
    def from_json(cls, row: list[float]) -> DynoMemory:
        m = cls(int(row[0]), *map(float, row[1:7]))
        m.load_samples, m.load_max = int(row[7]), float(row[8])
        return m


@dataclass(slots=True)
class Point:
    requests: dict[str, int] = field(default_factory=dict)  # by status class
    errors: dict[str, int] = field(default_factory=dict)  # H12: 3, R14: 1, ...
    response: Histogram = field(default_factory=Histogram)  # service time, requests a dyno answered
    memory: dict[str, DynoMemory] = field(default_factory=dict)  # by dyno name
    restarts: int = 0
    crashes: int = 0

    def add_request(self, request: RouterRequest) -> None:
        klass = status_class(request.status)
        self.requests[klass] = self.requests.get(klass, 0) + 1
        if request.code is not None:
            self.count_error(request.code)
        if request.service_ms is not None:
            self.response.add(request.service_ms)

    def count_error(self, code: str) -> None:
        if code in self.errors or len(self.errors) < MAX_CODES:
            self.errors[code] = self.errors.get(code, 0) + 1

    def add_sample(self, sample: RuntimeSample) -> None:
        memory = self.memory.get(sample.dyno)
        if memory is None:
            if len(self.memory) >= MAX_DYNOS:
                return
            memory = self.memory[sample.dyno] = DynoMemory()
        memory.add(sample)

    def add_change(self, change: DynoChange) -> None:
        if change.kind == "crash":
            self.crashes += 1
        else:
            self.restarts += 1

    def add_error(self, error: DynoError) -> None:
        self.count_error(error.code)

    def merge(self, other: Point) -> None:
        for key, n in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + n
        for key, n in other.errors.items():
            if key in self.errors or len(self.errors) < MAX_CODES:
                self.errors[key] = self.errors.get(key, 0) + n
        self.response.merge(other.response)
        for dyno, memory in other.memory.items():
            if dyno in self.memory:
                self.memory[dyno].merge(memory)
            elif len(self.memory) < MAX_DYNOS:
                self.memory[dyno] = DynoMemory.from_json(memory.to_json())
        self.restarts += other.restarts
        self.crashes += other.crashes

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "response": self.response.to_json(),
                "memory": {dyno: m.to_json() for dyno, m in self.memory.items()},
                "restarts": self.restarts, "crashes": self.crashes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Point:
        return cls(requests={k: int(v) for k, v in data.get("requests", {}).items()},
                   errors={k: int(v) for k, v in data.get("errors", {}).items()},
                   response=Histogram.from_json(data.get("response", {})),
                   memory={k: DynoMemory.from_json(v) for k, v in data.get("memory", {}).items()},
                   restarts=int(data.get("restarts", 0)), crashes=int(data.get("crashes", 0)))

    def summary(self, seconds: float) -> dict[str, Any]:
        """The figures a chart or a table shows for this slot (``seconds`` long)."""
        total = sum(self.requests.values())
        h = self.response
        memory = list(self.memory.values())
        quota = max((m.quota for m in memory), default=0.0)
        loads = [m for m in memory if m.load_samples]
        return {
            "requests": total,
            "rpm": round(total * 60 / seconds, 3),
            "status": {k: self.requests.get(k, 0) for k in STATUS_CLASSES},
            "errors": dict(sorted(self.errors.items())),
            "response_ms": dict(zip(("p50", "p95", "p99"), h.percentiles((50, 95, 99)), strict=True),
                                max=h.max if h.count else None, mean=h.mean()),
            "memory": None if not memory else {
                "dynos": len(memory),
                "rss_mean": sum(m.rss_sum for m in memory) / sum(m.samples for m in memory),
                "rss_max": max(m.rss_max for m in memory),
                "swap_max": max(m.swap_max for m in memory),
                "total_max": max(m.total_max for m in memory),
                "quota": quota,
                "quota_pct_max": round(max(m.total_max for m in memory) / quota * 100, 2) if quota else None,
                "per_dyno": {dyno: {"rss_max": m.rss_max, "swap_max": m.swap_max, "total_max": m.total_max}
                             for dyno, m in sorted(self.memory.items())},
            },
            "load": None if not loads else {
                "mean": sum(m.load_sum for m in loads) / sum(m.load_samples for m in loads),
                "max": max(m.load_max for m in loads)},
            "restarts": self.restarts,
            "crashes": self.crashes,
        }
