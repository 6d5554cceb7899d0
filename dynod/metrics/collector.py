"""Metrics: platform log lines in, per-minute points out, kept in their own store.

The log stream hands every platform message it publishes to ``observe`` (synchronous, never
blocks, a few microseconds: a regex over the line and a dict update). The current minute of each
app and process type lives in memory; ``run`` writes finished minutes to the store every few
seconds and prunes it. ``series`` reads a window back as dense points (one per step, empty ones
included) with the events that annotate it; ``openmetrics`` is the Prometheus text exposition.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from ..errors import UserError
from .histogram import RELATIVE_ERROR
from .observe import AppEvent, DynoChange, DynoError, RouterRequest, RuntimeLoad, RuntimeSample, observe
from .point import Point, status_class
from .store import MINUTE, MetricsStore

log = logging.getLogger("dynod.metrics")

MAX_WINDOW = 7 * 86400
FLUSH_INTERVAL = 5.0
SAMPLE_STALE = 300.0  # seconds without a runtime sample: the dyno is gone
EVENT_COALESCE = 2.0  # seconds: one ps:restart of five dynos is one "restart" event, not five


def parse_since(text: str) -> float:
    """'90s', '30m', '1h', '2d' (or plain seconds) as seconds, at most 7 days."""
    raw = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in units else (raw, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = math.nan
    if not 60 <= value <= MAX_WINDOW:  # NaN fails this too
        raise UserError(f"Invalid window {text[:20]!r}: use a span from 1m to 7d, like 30m, 1h, 24h or 7d.")
    return value


class Metrics:
    def __init__(self, path: Path, *, minute_retention: float = 86400, coarse_step: int = 600,
                 coarse_retention: float = 7 * 86400, clock: Callable[[], float] = time.time) -> None:
        self.store = MetricsStore(path, minute_retention=minute_retention, coarse_step=coarse_step,
                                  coarse_retention=coarse_retention)
        self.clock = clock
        self._current: dict[tuple[str, str], tuple[int, Point]] = {}  # (app, type) -> (minute, point)
        self._last_event: dict[str, tuple[float, str, int]] = {}  # app -> (at, kind, event count)
        # Since dynod started, for OpenMetrics counters: (app, type, class or code) -> n
        self._requests_total: dict[tuple[str, str, str], int] = {}
        self._errors_total: dict[tuple[str, str, str], int] = {}
        # (app, dyno) -> (when, latest sample); dropped once the dyno stops sampling (one-off
        # dynos come and go: run.4821 must not stay in memory, or in /metrics, for ever)
        self._memory_now: dict[tuple[str, str], tuple[float, RuntimeSample]] = {}
        # (app, dyno) -> load_1m of the load line just seen; its memory line, next, takes it
        self._load_next: dict[tuple[str, str], float] = {}
        self._observed = 0
        self._store_errors = 0
        self._last_store_error: str | None = None

    # -- in -----------------------------------------------------------------------------------

    def observe_messages(self, app: str, source: str, dyno: str, messages: list[str]) -> None:
        """The log stream's hook: every message it publishes from ``source`` dynod."""
        if source != "dynod":
            return
        for message in messages:
            try:
                self._observe(app, source, dyno, message)
            except Exception as exc:  # noqa: BLE001 - a figure must never stop a log line
                self._store_failed(exc)

    def _point(self, app: str, type: str, now: float) -> Point:
        minute = int(now) - int(now) % MINUTE
        key = (app, type)
        entry = self._current.get(key)
        if entry is None or entry[0] != minute:
            if entry is not None:
                self._write(app, type, *entry)
            entry = self._current[key] = (minute, Point())
        return entry[1]

    def _observe(self, app: str, source: str, dyno: str, message: str) -> None:
        seen = observe(source, dyno, message)
        if seen is None:
            return
        self._observed += 1
        now = self.clock()
        if isinstance(seen, RouterRequest):
            self._point(app, seen.type, now).add_request(seen)
            key = (app, seen.type, status_class(seen.status))
            self._requests_total[key] = self._requests_total.get(key, 0) + 1
            if seen.code is not None:
                self._count_error(app, seen.type, seen.code)
        elif isinstance(seen, RuntimeLoad):
            self._load_next[(app, seen.dyno)] = seen.load_1m
        elif isinstance(seen, RuntimeSample):
            load_1m = self._load_next.pop((app, seen.dyno), None)
            if seen.load_1m is None and load_1m is not None:
                seen = replace(seen, load_1m=load_1m)
            self._point(app, seen.type, now).add_sample(seen)
            self._memory_now[(app, seen.dyno)] = (now, seen)
        elif isinstance(seen, DynoError):
            self._point(app, seen.type, now).add_error(seen)
            self._count_error(app, seen.type, seen.code)
        elif isinstance(seen, DynoChange):
            self._point(app, seen.type, now).add_change(seen)
            if seen.kind == "restart" and seen.cause in ("requested", "cycling"):
                verb = "restarted" if seen.cause == "requested" else "cycled"
                self._event(app, now, "restart", f"{seen.dyno} {verb}", seen.type)
            elif seen.kind == "crash":
                self._event(app, now, "crash", f"{seen.dyno} crashed", seen.type)
        elif isinstance(seen, AppEvent):
            self._event(app, now, seen.kind, seen.text, seen.type)

    def _count_error(self, app: str, type: str, code: str) -> None:
        key = (app, type, code)
        if key in self._errors_total or len(self._errors_total) < 10_000:
            self._errors_total[key] = self._errors_total.get(key, 0) + 1

    def _event(self, app: str, now: float, kind: str, text: str, type: str | None) -> None:
        last = self._last_event.get(app)
        if last is not None and last[1] == kind and now - last[0] < EVENT_COALESCE and kind in ("restart", "crash"):
            self._last_event[app] = (now, kind, last[2] + 1)
            return
        self._last_event[app] = (now, kind, 1)
        self.store.add_event(app, now, kind, text, type)

    def forget_app(self, app: str) -> None:
        """apps:destroy: its figures go with it (a new app of the name starts empty)."""
        for key in [k for k in self._current if k[0] == app]:
            del self._current[key]
        for table in (self._requests_total, self._errors_total):
            for key in [k for k in table if k[0] == app]:
                del table[key]
        for key in [k for k in self._memory_now if k[0] == app]:
            del self._memory_now[key]
        for key in [k for k in self._load_next if k[0] == app]:
            del self._load_next[key]
        self._last_event.pop(app, None)
        try:
            self.store.forget_app(app)
        except sqlite3.Error as exc:
            self._store_failed(exc)

    # -- to the store ---------------------------------------------------------------------------

    def _write(self, app: str, type: str, minute: int, point: Point) -> None:
        try:
            self.store.write_minute(app, type, minute, point)
        except sqlite3.Error as exc:
            self._store_failed(exc)

    def _store_failed(self, exc: Exception) -> None:
        self._store_errors += 1
        self._last_store_error = str(exc)
        log.warning("metrics: %s", exc)

    def flush(self) -> None:
        """Write every minute that has ended; prune what is past its retention."""
        now = self.clock()
        minute = int(now) - int(now) % MINUTE
        for key, (start, point) in list(self._current.items()):
            if start < minute:
                del self._current[key]
                self._write(*key, start, point)
        for key, (at, _sample) in list(self._memory_now.items()):
            if now - at > SAMPLE_STALE:
                del self._memory_now[key]
        try:
            self.store.prune(now)
        except sqlite3.Error as exc:
            self._store_failed(exc)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await trio.sleep(FLUSH_INTERVAL)
                self.flush()
        finally:
            self.store.close()

    # -- out ------------------------------------------------------------------------------------

    def types(self, app: str) -> list[str]:
        return sorted(set(self.store.types(app)) | {t for a, t in self._current if a == app})

    def _snapshot(self, app: str, type: str) -> tuple[tuple[int, Point] | None, set[str]]:
        """What of the memory a series needs, copied (a reader thread must not see it change)."""
        current = self._current.get((app, type))
        copy = None if current is None else (current[0], Point.from_json(current[1].to_json()))
        return copy, {t for a, t in self._current if a == app}

    def series(self, app: str, type: str = "web", since: float = 3600) -> dict[str, Any]:
        """Dense points of one process type over the last ``since`` seconds, with events."""
        return self._series(app, type, since, *self._snapshot(app, type), db=None)

    async def series_in_thread(self, app: str, type: str = "web", since: float = 3600) -> dict[str, Any]:
        """``series`` with the reading and decoding (~0.1 s for 24 h) off the trio thread, on a
        connection of its own, so the API and the log stream never wait for a chart."""
        snapshot = self._snapshot(app, type)

        def read() -> dict[str, Any]:
            db = self.store.reader()
            try:
                return self._series(app, type, since, *snapshot, db=db)
            finally:
                db.close()

        return await trio.to_thread.run_sync(read)

    def _series(self, app: str, type: str, since: float, current: tuple[int, Point] | None,
                live_types: set[str], *, db: sqlite3.Connection | None) -> dict[str, Any]:
        now = self.clock()
        step = MINUTE if since <= self.store.minute_retention else self.store.coarse_step
        start = int(now - since)
        start -= start % step
        slots: dict[int, Point] = {}
        for at, _type, point in self.store.points(app, type, step, start, db=db):
            if at in slots:
                slots[at].merge(point)
            else:
                slots[at] = point
        if current is not None:  # the minute in progress
            at = current[0] - current[0] % step
            if at in slots:
                slots[at].merge(current[1])
            else:
                slots[at] = current[1]
        points = []
        t = start
        last = int(now) - int(now) % step
        empty = Point()
        while t <= last:
            point = slots.get(t) or empty
            # The slot in progress is only as long as it has run so far (rates stay honest).
            length = step if t + step <= now else max(1.0, now - t)
            points.append({"t": t, **point.summary(length)})
            t += step
        types = sorted(set(self.store.types(app, db=db)) | live_types)
        return {"app": app, "type": type, "types": types, "step": step, "since": start, "until": now,
                "percentile_error": round(RELATIVE_ERROR, 4),
                "events": self.store.events(app, start, db=db), "points": points}

    def openmetrics(self, apps: list[str] | None = None) -> str:
        """Prometheus text exposition: counters since dynod started, the last minute's percentiles
        and the latest memory sample of each dyno."""
        wanted = None if apps is None else set(apps)
        out: list[str] = []

        def family(name: str, kind: str, help: str) -> None:
            out.append(f"# HELP {name} {help}")
            out.append(f"# TYPE {name} {kind}")

        family("dynod_router_requests_total", "counter", "Requests the router answered, by status class.")
        for (app, type, klass), n in sorted(self._requests_total.items()):
            if wanted is None or app in wanted:
                out.append(f'dynod_router_requests_total{{app="{app}",type="{type}",status="{klass}"}} {n}')
        family("dynod_errors_total", "counter", "Router (H) and runtime (R) errors, by code.")
        for (app, type, code), n in sorted(self._errors_total.items()):
            if wanted is None or app in wanted:
                out.append(f'dynod_errors_total{{app="{app}",type="{type}",code="{_label(code)}"}} {n}')
        family("dynod_router_service_ms", "gauge", "Response time percentiles of the last minute that had requests.")
        for (app, type), (_minute, point) in sorted(self._current.items()):
            if (wanted is None or app in wanted) and point.response.count:
                for p in (50, 95, 99):
                    value = point.response.percentile(p)
                    out.append(f'dynod_router_service_ms{{app="{app}",type="{type}",quantile="0.{p}"}} {value}')
        family("dynod_dyno_memory_bytes", "gauge", "The latest runtime sample of each dyno.")
        for (app, dyno), (_at, sample) in sorted(self._memory_now.items()):
            if wanted is None or app in wanted:
                for kind, value in (("rss", sample.rss), ("swap", sample.swap), ("total", sample.total),
                                    ("quota", sample.quota)):
                    out.append(f'dynod_dyno_memory_bytes{{app="{app}",dyno="{dyno}",kind="{kind}"}} {value:.0f}')
        out.append("# EOF")
        return "\n".join(out) + "\n"

    def statistics(self) -> dict[str, Any]:
        try:
            stored: dict[str, int] = self.store.statistics()
        except (sqlite3.Error, OSError) as exc:
            stored = {}
            self._last_store_error = str(exc)
        return {"observed": self._observed, "open_points": len(self._current), "store_errors": self._store_errors,
                "last_store_error": self._last_store_error, **stored}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
