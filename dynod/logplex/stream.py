"""The log stream: every app's lines in, to its ring, its tails and its drains.

Rules this keeps (docs/logs.md says why):
- publishing never waits: ``emit`` is synchronous, a pump only awaits its own pipe; each
  consumer has its own bounded queue (a tail's, a drain's), so a slow or dead consumer only
  loses its own lines, and says so (L11 for a tail, L10 for a drain);
- order: lines are published in the order they were read or emitted, so one dyno's lines keep
  their order everywhere;
- fairness: a pump handles one read (``read_size`` bytes) per scheduler turn, so a flooding dyno
  gets one turn like everyone else and another app's lines wait at most one round;
- the last ``lines`` lines of each app survive a dynod restart (see store.py), and drains too.
"""

from __future__ import annotations

import errno
import itertools
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio

from ..errors import Conflict, NotFound, UserError
from ..model import check_app_name
from . import store
from .drain import Drain, DrainBuffer, parse_drain_url, redact
from .egress import DrainEgress
from .format import DynoOutputSplitter, LineFilter, line_prefix, split_message
from .sender import DrainSender
from .syslog import LOGPLEX_PROCID, l10_message
from .tail import TailSession


class _AppLog:
    """One app's share of the stream."""

    __slots__ = ("ring", "tails", "drains", "file", "lines_total")

    def __init__(self, lines: int, file: store.AppLogFile | None) -> None:
        self.ring: deque[str] = deque(maxlen=lines)
        self.tails: list[TailSession] = []
        self.drains: dict[str, DrainSender] = {}  # by drain id, in the order they were added
        self.file = file
        self.lines_total = 0


class LogStream:
    def __init__(
        self,
        logs_dir: Path,
        *,
        lines: int = 1500,
        drain_buffer: int = 1024,
        tail_buffer: int = 10_000,
        ssl_context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
        read_size: int = 65536,
        backoff_min: float = 0.25,
        backoff_max: float = 30.0,
        connect_timeout: float = 5.0,
        send_timeout: float = 30.0,
        notice_interval: float = 10.0,
        drain_egress: DrainEgress | None = None,
    ) -> None:
        if lines < 1 or drain_buffer < 1 or tail_buffer < 1:
            raise ValueError("lines, drain_buffer and tail_buffer must be positive")
        self.logs_dir = Path(logs_dir)
        self.lines = lines
        self.drain_buffer = drain_buffer
        self.tail_buffer = tail_buffer
        self.read_size = read_size
        self.notice_interval = notice_interval
        self._sender_options: dict[str, Any] = {
            "ssl_context": ssl_context,
            "backoff_min": backoff_min,
            "backoff_max": backoff_max,
            "connect_timeout": connect_timeout,
            "send_timeout": send_timeout,
            "egress": drain_egress,
        }
        # Where drains may connect (egress.py); the default refuses the host and its dynos.
        self.drain_egress = drain_egress or DrainEgress()
        self._apps: dict[str, _AppLog] = {}
        self._nursery: trio.Nursery | None = None
        self._lines_in = 0
        self._bytes_in = 0
        self._pumps = 0
        self._tail_dropped_closed = 0
        self._load_errors: list[str] = []
        # Called with (app, source, dyno, messages) for every line ``emit`` publishes: how the
        # metrics read router lines and runtime samples (dynod/metrics). They must not block.
        self.observers: list[Callable[[str, str, str, list[str]], None]] = []
        self._load()

    # -- start-up -------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            apps = store.known_apps(self.logs_dir)
        except OSError as exc:
            # Logs are not worth refusing to start over: the stream runs in memory, and says why.
            self._load_errors.append(f"{self.logs_dir}: {exc.strerror or exc}")
            return
        for app in apps:
            state = self._app(app)
            if state.file is not None:
                try:
                    state.ring.extend(state.file.load())
                except OSError as exc:
                    self._load_errors.append(f"{state.file.directory}: {exc.strerror or exc}")
            directory = store.app_dir(self.logs_dir, app)
            assert directory is not None  # known_apps lists app names only
            try:
                drains = store.load_drains(directory)
            except (OSError, ValueError) as exc:
                # One bad file must not keep dynod from starting; it is reported in statistics().
                self._load_errors.append(f"{directory / store.DRAINS}: {exc}")
                continue
            for drain in drains:
                try:
                    self._start_drain(app, state, drain)
                except UserError as exc:
                    self._load_errors.append(f"{app}: drain {drain.id}: {exc}")

    def _app(self, app: str) -> _AppLog:
        state = self._apps.get(app)
        if state is None:
            directory = store.app_dir(self.logs_dir, app)
            file = store.AppLogFile(directory, self.lines) if directory is not None else None
            state = self._apps[app] = _AppLog(self.lines, file)
        return state

    # -- background work ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain senders and drop notices; runs until cancelled (inside the daemon's nursery)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for state in self._apps.values():
                    for sender in state.drains.values():
                        nursery.start_soon(sender.run)
                task_status.started()
                while True:
                    await trio.sleep(min(1.0, self.notice_interval))
                    self._announce_drain_drops()
        finally:
            self._nursery = None
            for state in self._apps.values():
                for session in state.tails:
                    session.close()
                if state.file is not None:
                    state.file.close()

    def _announce_drain_drops(self) -> None:
        """Tell the app's own log about drain drops (the drain itself hears in-band, if it lives)."""
        now = time.time()
        for app, state in list(self._apps.items()):
            for sender in state.drains.values():
                notice = sender.buffer.announce(now, self.notice_interval)
                if notice is not None:
                    text = f"{l10_message(*notice)} Drain: {redact(sender.drain.url)}"
                    # Not to drains: a notice about an overflowing drain must not feed it.
                    line = line_prefix(now, "dynod", LOGPLEX_PROCID) + text
                    self._publish(app, "dynod", LOGPLEX_PROCID, [line], to_drains=False)

    # -- input ----------------------------------------------------------------------------

    def _publish(self, app: str, source: str, dyno: str, lines: list[str], *, to_drains: bool = True) -> None:
        state = self._apps.get(app) or self._app(app)
        state.ring.extend(lines)
        state.lines_total += len(lines)
        self._lines_in += len(lines)
        if state.file is not None:
            state.file.append(lines)
        if state.tails or state.drains:
            now = time.time()
            for session in state.tails:
                if session.filter.matches(source, dyno):
                    session.offer(lines, now)
            if to_drains:
                for sender in state.drains.values():
                    sender.offer(lines, now)

    def emit(self, app: str, source: str, dyno: str, message: str, *, at: float | None = None) -> None:
        """A platform line (or several, if ``message`` holds newlines). Never blocks."""
        messages = split_message(message)
        prefix = line_prefix(time.time() if at is None else at, source, dyno)
        self._publish(app, source, dyno, [prefix + m for m in messages])
        for observer in self.observers:
            observer(app, source, dyno, messages)

    async def pump(self, app: str, dyno: str, fd: int) -> None:
        """Read a dyno's output pipe until EOF as ``app[<dyno>]`` lines; closes ``fd``."""
        os.set_blocking(fd, False)
        splitter = DynoOutputSplitter()
        self._pumps += 1
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                try:
                    data = os.read(fd, self.read_size)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.EIO:  # a pty whose other side has closed: that is EOF
                        break
                    raise
                if not data:
                    break
                self._bytes_in += len(data)
                messages = splitter.feed(data)
                if messages:
                    prefix = line_prefix(time.time(), "app", dyno)
                    self._publish(app, "app", dyno, [prefix + m for m in messages])
        finally:
            self._pumps -= 1
            # The last line without a newline is still a line, even if the pump was cancelled.
            rest = splitter.finish()
            if rest:
                prefix = line_prefix(time.time(), "app", dyno)
                self._publish(app, "app", dyno, [prefix + m for m in rest])
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    # -- reading --------------------------------------------------------------------------

    def _check_count(self, lines: int) -> int:
        if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
            raise UserError(f"Number of log lines must be a whole number from 0 to {self.lines}, "
                            f"not {lines!r}.")
        return min(lines, self.lines)

    @staticmethod
    def _select(ring: deque[str], count: int, line_filter: LineFilter) -> list[str]:
        if count == 0:
            return []
        if line_filter.everything:
            start = max(0, len(ring) - count)
            return list(itertools.islice(ring, start, None))
        picked: list[str] = []
        for line in reversed(ring):
            if line_filter.matches_line(line):
                picked.append(line)
                if len(picked) == count:
                    break
        picked.reverse()
        return picked

    def recent(self, app: str, lines: int = 100, ps: str | None = None, source: str | None = None
               ) -> list[str]:
        """The last ``lines`` lines of the app (after filtering), oldest first."""
        count = self._check_count(lines)
        line_filter = LineFilter.build(ps, source)
        state = self._apps.get(app)
        return [] if state is None else self._select(state.ring, count, line_filter)

    def tail(self, app: str, lines: int = 100, ps: str | None = None, source: str | None = None
             ) -> AsyncIterator[str]:
        """The last ``lines`` lines, then new ones as they arrive, until the app is forgotten or
        the stream stops. A reader that falls more than ``tail_buffer`` lines behind gets an L11
        line in place of what it missed. Arguments are checked now, not at the first line."""
        return self._lines_of(self.tail_batches(app, lines, ps, source))

    def tail_batches(self, app: str, lines: int = 100, ps: str | None = None, source: str | None = None
                     ) -> AsyncIterator[list[str]]:
        """``tail``, a list of lines at a time: everything queued since the reader last asked.
        A reader that writes each batch at once (one chunk, one send) keeps up with floods that
        a line-at-a-time reader cannot."""
        count = self._check_count(lines)
        line_filter = LineFilter.build(ps, source)
        return self._tail(app, count, line_filter)

    @staticmethod
    async def _lines_of(batches: AsyncIterator[list[str]]) -> AsyncIterator[str]:
        try:
            async for batch in batches:
                for line in batch:
                    yield line
        finally:
            await batches.aclose()  # type: ignore[attr-defined]  # an async generator

    async def _tail(self, app: str, count: int, line_filter: LineFilter) -> AsyncIterator[list[str]]:
        state = self._app(app)
        session = TailSession(line_filter, self.tail_buffer)
        backlog = self._select(state.ring, count, line_filter)
        state.tails.append(session)
        try:
            if backlog:
                yield backlog
            while True:
                batch = await session.next_lines()
                if not batch:
                    return
                yield batch
        finally:
            self._tail_dropped_closed += session.dropped_total
            if session in state.tails:
                state.tails.remove(session)

    # -- drains ---------------------------------------------------------------------------

    def list_drains(self, app: str) -> list[dict[str, str]]:
        state = self._apps.get(app)
        return [] if state is None else [sender.drain.to_json() for sender in state.drains.values()]

    def _start_drain(self, app: str, state: _AppLog, drain: Drain) -> DrainSender:
        target = parse_drain_url(drain.url)
        sender = DrainSender(drain, target, DrainBuffer(self.drain_buffer), **self._sender_options)
        state.drains[drain.id] = sender
        if self._nursery is not None:
            self._nursery.start_soon(sender.run)
        return sender

    def _save_drains(self, app: str, drains: list[Drain]) -> None:
        directory = store.app_dir(self.logs_dir, app)
        assert directory is not None  # callers checked the app name
        try:
            store.save_drains(directory, drains)
        except OSError as exc:
            raise UserError(f"Could not save the drains of {app} ({exc.strerror or exc}); "
                            f"check that {directory} is writable and has space.") from None

    async def check_drain_target(self, url: str) -> None:
        """Refuse (one UserError line) a drain whose host is one drains may not reach."""
        target = parse_drain_url(url)
        await self.drain_egress.check(target.host, target.port, url.strip())

    def add_drain(self, app: str, url: str) -> dict[str, str]:
        """Start draining ``app``'s lines to ``url``; returns {"id", "url", "token"}."""
        check_app_name(app)
        parse_drain_url(url)
        url = url.strip()
        state = self._app(app)
        if any(sender.drain.url == url for sender in state.drains.values()):
            raise Conflict(f"{redact(url)} already drains {app}; remove it first to add it again.")
        drain = Drain.new(url)
        self._save_drains(app, [s.drain for s in state.drains.values()] + [drain])
        self._start_drain(app, state, drain)
        return drain.to_json()

    def remove_drain(self, app: str, url_or_id: str) -> None:
        state = self._apps.get(app)
        key = url_or_id.strip()
        found = None
        if state is not None:
            found = next((s for s in state.drains.values()
                          if key in (s.drain.id, s.drain.url, s.drain.token)), None)
        if found is None:
            raise NotFound(f"No drain {url_or_id!r} on {app}; `dynoctl drains -a {app}` lists them.")
        assert state is not None
        self._save_drains(app, [s.drain for s in state.drains.values() if s is not found])
        del state.drains[found.drain.id]
        found.cancel_scope.cancel()

    # -- apps:destroy ---------------------------------------------------------------------

    def forget_app(self, app: str) -> None:
        """Drop the app's ring, tails (they end), drains and files."""
        state = self._apps.pop(app, None)
        if state is not None:
            for session in state.tails:
                session.close()
            for sender in state.drains.values():
                sender.cancel_scope.cancel()
            if state.file is not None:
                state.file.close()
        store.remove_app(self.logs_dir, app)

    # -- introspection --------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        tails = [s for state in self._apps.values() for s in state.tails]
        files = [state.file for state in self._apps.values() if state.file is not None]
        return {
            "apps": len(self._apps),
            "lines_in": self._lines_in,
            "bytes_in": self._bytes_in,
            "pumps": self._pumps,
            "tails": len(tails),
            "tail_dropped": self._tail_dropped_closed + sum(s.dropped_total for s in tails),
            "drains": [dict(sender.statistics(), app=app)
                       for app, state in self._apps.items() for sender in state.drains.values()],
            "persist_errors": sum(f.errors for f in files),
            "last_persist_error": next((f.last_error for f in files if f.last_error), None),
            "load_errors": list(self._load_errors),
        }
