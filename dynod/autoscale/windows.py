"""The router's response times per app, in fixed windows, for the autoscaler. Sans I/O.

The same source as Heroku Metrics (dynod/metrics): the router's access lines in the log stream,
parsed by ``dynod.metrics.observe``. The autoscaler keeps windows of its own rather than reading
the metrics store because its window is a setting (one minute by default, as Heroku's figures;
seconds in tests), and it needs only the last few of them, for the apps it scales.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..metrics.histogram import Histogram
from ..metrics.observe import RouterRequest, observe
from .decision import Window

KEEP = 64  # windows per app: more than any up_windows/down_windows setting allows


class ResponseWindows:
    def __init__(self, window: float, *, clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.clock = clock
        self.apps: set[str] = set()  # the apps being watched (those with autoscaling on)
        self._windows: dict[str, dict[int, Histogram]] = {}  # app -> window index -> web service times

    def watch(self, app: str) -> None:
        self.apps.add(app)

    def forget(self, app: str) -> None:
        self.apps.discard(app)
        self._windows.pop(app, None)

    def observe_messages(self, app: str, source: str, dyno: str, messages: list[str]) -> None:
        """The log stream's hook; only the router's lines of watched apps are read."""
        if app not in self.apps or source != "dynod" or dyno != "router":
            return
        for message in messages:
            seen = observe(source, dyno, message)
            if isinstance(seen, RouterRequest) and seen.type == "web" and seen.service_ms is not None:
                self.add(app, seen.service_ms)

    def add(self, app: str, service_ms: float, at: float | None = None) -> None:
        index = int((self.clock() if at is None else at) // self.window)
        windows = self._windows.setdefault(app, {})
        histogram = windows.get(index)
        if histogram is None:
            histogram = windows[index] = Histogram()
            for old in [i for i in windows if i <= index - KEEP]:
                del windows[old]
        histogram.add(service_ms)

    def complete(self, app: str, count: int, now: float | None = None) -> list[Window]:
        """The last ``count`` finished windows, oldest first; a window without requests is empty."""
        current = int((self.clock() if now is None else now) // self.window)
        windows = self._windows.get(app, {})
        result = []
        for index in range(current - count, current):
            histogram = windows.get(index)
            p95 = histogram.percentiles((95,))[0] if histogram is not None and histogram.count else None
            result.append(Window(start=index * self.window, p95_ms=p95,
                                 requests=histogram.count if histogram is not None else 0))
        return result
