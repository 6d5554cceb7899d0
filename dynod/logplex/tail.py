"""A tail session: one `dynoctl logs --tail` reader's queue of new lines.

The stream ``offer``s it each batch of lines (never waiting); the reader takes them with
``next_lines``. The queue is bounded: a reader that falls behind loses the newest lines, and at
the exact place of the gap it gets Logplex's L11 line saying how many it missed and since when,
so a slow reader never holds memory hostage nor slows the stream or other readers.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import trio

from .format import LineFilter, line_prefix
from .syslog import LOGPLEX_PROCID, l11_message


@dataclass(slots=True)
class _Gap:
    """Where lines were dropped, standing in the queue in their place."""

    count: int
    since: float


class TailSession:
    __slots__ = ("filter", "capacity", "_queue", "_queued_lines", "_gaps", "_wakeup", "closed", "dropped_total")

    def __init__(self, line_filter: LineFilter, capacity: int) -> None:
        self.filter = line_filter
        self.capacity = capacity
        self._queue: deque[str | _Gap] = deque()
        self._queued_lines = 0
        self._gaps = 0  # _Gap entries in the queue; none is the common, fast case
        self._wakeup: trio.Event | None = None
        self.closed = False
        self.dropped_total = 0

    def offer(self, lines: list[str], now: float) -> None:
        room = self.capacity - self._queued_lines
        count = len(lines)
        if count <= room:
            self._queue.extend(lines)
            self._queued_lines += count
        else:
            if room > 0:
                self._queue.extend(lines[:room])
                self._queued_lines += room
            dropped = count - max(room, 0)
            self.dropped_total += dropped
            last = self._queue[-1] if self._queue else None
            if isinstance(last, _Gap):
                last.count += dropped
            else:
                self._queue.append(_Gap(dropped, now))
                self._gaps += 1
        self._wake()

    def close(self) -> None:
        """The app is gone or the stream stops: the reader ends after what it already has."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def take_nowait(self) -> list[str]:
        """Everything queued now, with L11 lines where gaps were."""
        queue = self._queue
        self._queued_lines = 0
        if not self._gaps:
            out: list[str] = list(queue)  # type: ignore[arg-type]  # no gaps: all are lines
            queue.clear()
            return out
        out = []
        self._gaps = 0
        while queue:
            item = queue.popleft()
            if isinstance(item, _Gap):
                notice = l11_message(item.count, item.since)
                out.append(line_prefix(time.time(), "dynod", LOGPLEX_PROCID) + notice)
            else:
                out.append(item)
        return out

    async def next_lines(self) -> list[str]:
        """The next lines, waiting for some if none are queued; [] once closed and empty."""
        while not self._queue and not self.closed:
            event = self._wakeup = trio.Event()
            await event.wait()
        return self.take_nowait()

    def __len__(self) -> int:
        return self._queued_lines
