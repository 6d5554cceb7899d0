"""Metrics without I/O but their own SQLite file: histogram error, line parsing, aggregation,
retention and downsampling bounds."""

from __future__ import annotations

import os
import random
import stat

import pytest

from dynod.errors import UserError
from dynod.logplex.metrics import format_sample, r14_line
from dynod.metrics import RELATIVE_ERROR, Histogram, Metrics, parse_since
from dynod.metrics.histogram import LAST_BUCKET
from dynod.metrics.observe import AppEvent, DynoChange, DynoError, RouterRequest, RuntimeSample, observe
from dynod.router.codes import RouterCode
from dynod.router.logline import access_line

MB = 1024 * 1024


def _exact_percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


@pytest.mark.parametrize("seed", range(5))
def test_histogram_percentiles_are_within_the_documented_error(seed: int) -> None:
    rng = random.Random(seed)
    values = [round(rng.lognormvariate(4, 1.2)) for _ in range(5000)]
    h = Histogram()
    for v in values:
        h.add(v)
    for p in (50, 95, 99):
        exact = _exact_percentile(values, p)
        got = h.percentile(p)
        assert got is not None
        assert abs(got - exact) <= max(exact * RELATIVE_ERROR, 0.5) + 1e-9, (p, exact, got)
    assert h.max == max(values)
    assert len(h.counts) <= LAST_BUCKET + 1
    assert h.percentiles((50, 95, 99, 100)) == [h.percentile(p) for p in (50, 95, 99, 100)]


def test_histogram_small_values_are_exact_and_merge_adds() -> None:
    a, b = Histogram(), Histogram()
    for v in range(10):
        a.add(v)
    for v in range(10, 16):
        b.add(v)
    a.merge(b)
    assert a.count == 16 and a.percentile(50) == 7 and a.percentile(100) == 15
    assert Histogram.from_json(a.to_json()) == a
    assert Histogram().percentile(50) is None
    with pytest.raises(ValueError):
        a.add(-1)
    a.add(10**9)  # far past the last bucket: bounded, max still exact
    assert a.max == 10**9 and max(a.counts) == LAST_BUCKET


def test_router_lines_parse_as_requests() -> None:
    ok = access_line(method="GET", path='/a "b"', host="x.example", request_id="r", fwd="1.2.3.4", dyno="web.2",
                     connect=0.001, service=0.018, status=201, nbytes=5, protocol="http")
    assert observe("dynod", "router", ok) == RouterRequest("web", 201, 18.0, None)
    h12 = access_line(method="GET", path="/", host="x", request_id="r", fwd="f", dyno="web.1", connect=0.001,
                      service=None, status=503, nbytes=None, protocol="http", code=RouterCode("H12", "Request timeout"))
    assert observe("dynod", "router", h12) == RouterRequest("web", 503, None, "H12")
    # a client's X-Forwarded-For spelling out fields cannot fake the router's own
    spoof = access_line(method="GET", path="/ dyno=web.9 connect=0ms service=1ms status=200 bytes=1 protocol=x",
                        host="x", request_id="r", fwd='" dyno=web.9 connect=0ms service=9999ms status=200 bytes=1 x="',
                        dyno="web.1", connect=0.0, service=0.005, status=500, nbytes=1, protocol="http")
    assert observe("dynod", "router", spoof) == RouterRequest("web", 500, 5.0, None)
    assert observe("app", "router", ok) is None  # an app printing router-like lines counts for nothing
    assert observe("dynod", "router", "garbage") is None


def test_runtime_samples_events_and_dyno_changes_parse() -> None:
    sample = format_sample("web.1", {"memory_rss": 100 * MB, "memory_cache": 5 * MB, "memory_swap": 2 * MB,
                                     "memory_pgpgin": 1, "memory_pgpgout": 1, "memory_quota": 512 * MB})
    got = [observe("dynod", "web.1", line) for line in sample.split("\n")]
    assert got[-1] == RuntimeSample("web", "web.1", 100 * MB, 2 * MB, 107 * MB, 512 * MB, None)
    assert [observe("dynod", "web.1", m) for m in r14_line(600 * MB, 512 * MB).split("\n")] == \
        [None, DynoError("web", "web.1", "R14")]
    assert observe("dynod", "worker.3", "State changed from up to crashed") == DynoChange("worker", "worker.3", "crash")
    assert observe("dynod", "web.1", "State changed from crashed to starting") == \
        DynoChange("web", "web.1", "restart", "crash")
    assert observe("dynod", "web.1", "Restarting") == DynoChange("web", "web.1", "restart", "requested")
    assert observe("dynod", "api", "Release v3 created: Deploy abc123") == AppEvent("deploy", "v3: Deploy abc123")
    assert observe("dynod", "api", "Release v4 created by dynoctl: Set FOO config vars") == \
        AppEvent("config", "v4: Set FOO config vars")
    assert observe("dynod", "api", "Release v5 created by dynoctl: Rollback to v3").kind == "rollback"  # type: ignore[union-attr]
    assert observe("dynod", "api", "Scaled web to 3 by dynoctl") == AppEvent("scale", "Scaled web to 3", "web")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _line(service_ms: int, status: int, code: str | None = None) -> str:
    return access_line(method="GET", path="/", host="h", request_id="r", fwd="f", dyno="web.1", connect=0.0,
                       service=service_ms / 1000, status=status, nbytes=1, protocol="http",
                       code=RouterCode(code, "x") if code else None)


def test_a_minute_of_known_traffic_gives_its_percentiles_and_counts(tmp_path) -> None:
    clock = Clock(1_800_000_000.0)  # a minute boundary
    metrics = Metrics(tmp_path / "m.sqlite3", clock=clock)
    # 1..1000 ms once each: p50 = 500, p95 = 950, p99 = 990, max 1000
    statuses = [200] * 900 + [404] * 50 + [500] * 30 + [302] * 20
    random.Random(1).shuffle(statuses)
    for ms, status in zip(range(1, 1001), statuses, strict=True):
        metrics.observe_messages("app1", "dynod", "router", [_line(ms, status)])
    metrics.observe_messages("app1", "dynod", "router", [_line(3, 503, "H13")])
    clock.now += 61
    metrics.flush()
    series = metrics.series("app1", "web", 3600)
    point = next(p for p in series["points"] if p["requests"])
    r = point["response_ms"]
    for key, exact in (("p50", 500), ("p95", 950), ("p99", 990)):
        assert abs(r[key] - exact) <= exact * RELATIVE_ERROR, (key, r[key])
    assert r["max"] == 1000
    assert point["status"] == {"1xx": 0, "2xx": 900, "3xx": 20, "4xx": 50, "5xx": 31}
    assert point["errors"] == {"H13": 1}
    assert point["rpm"] == pytest.approx(1001)
    assert series["step"] == 60 and len(series["points"]) == 61
    text = metrics.openmetrics()
    assert 'dynod_router_requests_total{app="app1",type="web",status="2xx"} 900' in text
    assert 'dynod_errors_total{app="app1",type="web",code="H13"} 1' in text
    assert stat.S_IMODE(os.stat(tmp_path / "m.sqlite3").st_mode) == 0o600


def test_minutes_downsample_into_coarse_points_and_retention_is_bounded(tmp_path) -> None:
    clock = Clock(1_800_000_000.0)
    metrics = Metrics(tmp_path / "m.sqlite3", clock=clock, minute_retention=3600, coarse_retention=4 * 3600)
    for minute in range(6 * 60):  # six hours, one request a minute at 10 * (minute % 10 + 1) ms
        metrics.observe_messages("a", "dynod", "router", [_line(10 * (minute % 10 + 1), 200)])
        metrics.observe_messages("a", "dynod", "api", [f"Scaled web to {minute} by dynoctl"])
        clock.now += 60
        metrics.flush()
    store = metrics.store
    minutes = store.points("a", "web", 60, 0)
    coarse = store.points("a", "web", 600, 0)
    assert len(minutes) <= 61 and len(coarse) <= 4 * 6 + 1
    assert all(clock.now - start <= 3600 + 60 for start, _, _ in minutes)
    # each full coarse point is exactly its ten minutes merged
    full = [p for start, _, p in coarse if start + 600 <= clock.now - 60]
    assert full and all(p.response.count == 10 and p.response.max == 100 for p in full)
    assert store.statistics()["events"] <= 500
    week = metrics.series("a", "web", 7 * 86400)
    assert week["step"] == 600 and sum(p["requests"] for p in week["points"]) <= 4 * 60 + 10
    metrics.forget_app("a")
    assert store.points("a", "web", 60, 0) == [] and store.events("a", 0) == []


def test_memory_restarts_and_events_are_kept(tmp_path) -> None:
    clock = Clock(1_800_000_000.0)
    metrics = Metrics(tmp_path / "m.sqlite3", clock=clock)
    for rss in (100, 300):
        sample = format_sample("web.1", {"memory_rss": rss * MB, "memory_cache": 0, "memory_swap": 0,
                                         "memory_pgpgin": 1, "memory_pgpgout": 1, "memory_quota": 512 * MB})
        metrics.observe_messages("a", "dynod", "web.1", sample.split("\n"))
    for dyno in ("web.1", "web.2"):
        metrics.observe_messages("a", "dynod", dyno, ["Restarting"])
    metrics.observe_messages("a", "dynod", "web.2", ["State changed from up to crashed"])
    metrics.observe_messages("a", "dynod", "api", ["Release v2 created: Deploy 123456"])
    point = metrics.series("a", "web", 600)["points"][-1]
    assert point["memory"]["rss_max"] == 300 * MB and point["memory"]["rss_mean"] == 200 * MB
    assert point["memory"]["quota_pct_max"] == pytest.approx(300 / 512 * 100, abs=0.01)
    assert point["restarts"] == 2 and point["crashes"] == 1
    kinds = [e["kind"] for e in metrics.series("a", "web", 600)["events"]]
    assert kinds == ["restart", "crash", "deploy"]  # two dynos restarted together: one event
    assert 'dynod_dyno_memory_bytes{app="a",dyno="web.1",kind="rss"}' in metrics.openmetrics()
    clock.now += 301  # web.1 stopped sampling: gone from memory and from /metrics
    metrics.flush()
    assert "web.1" not in metrics.openmetrics()


@pytest.mark.parametrize("text", ["", "0", "59s", "8d", "abc", "nanh", "infm", "-1h"])
def test_bad_windows_are_refused_with_one_line(text: str) -> None:
    with pytest.raises(UserError, match="use a span from 1m to 7d"):
        parse_since(text)


def test_windows_parse() -> None:
    assert parse_since("1h") == 3600 and parse_since("30m") == 1800 and parse_since("7d") == 7 * 86400
    assert parse_since("120") == 120
