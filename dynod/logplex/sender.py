"""The trio side of a drain: one task per drain moving its buffer to the receiver.

Each drain runs on its own, so a dead drain (refusing, unreachable) or a stuck one (accepts but
never reads) only ever fills its own buffer: publishing never waits on it, and dynos, tails and
other drains never notice. Rules:
- connect when there is something to send; on failure wait, doubling from ``backoff_min`` to
  ``backoff_max``; a success resets the wait;
- syslog: a connection whose peer closes is noticed by a reader task at once (a receiver never
  talks), so lines are not written into a dead socket; a send that makes no progress for
  ``send_timeout`` drops the connection; a batch that did not surely arrive is counted lost and
  reported in the next L10 line;
- HTTPS (Logplex's drain protocol): one POST per batch with Content-Type application/logplex-1,
  Logplex-Msg-Count, Logplex-Frame-Id and Logplex-Drain-Token; a failed POST is retried with the
  same Frame-Id (receivers may de-duplicate by it) until it succeeds, except a 4xx other than 408
  and 429, which would fail again forever: that batch is counted lost.
"""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any

import trio

from . import syslog
from .drain import Batch, Drain, DrainBuffer, DrainTarget, redact

USER_AGENT = "dynod-logplex/0.1"
# Heroku's HTTPS drains write this in the HOST field and carry the token in a header.
HTTP_SYSLOG_HOST = "host"


class _PeerClosed(Exception):
    pass


class DrainSender:
    """Moves one drain's buffered lines to its receiver until cancelled."""

    def __init__(
        self,
        drain: Drain,
        target: DrainTarget,
        buffer: DrainBuffer,
        *,
        ssl_context: Callable[[], ssl.SSLContext],
        backoff_min: float,
        backoff_max: float,
        connect_timeout: float,
        send_timeout: float,
    ) -> None:
        self.drain = drain
        self.target = target
        self.buffer = buffer
        self._ssl_context_factory = ssl_context
        self._ssl_context: ssl.SSLContext | None = None
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self._wakeup: trio.Event | None = None
        self.cancel_scope = trio.CancelScope()
        self.connected = False
        self.sent_total = 0
        self.batches_total = 0
        self.connects_total = 0
        self.failures_total = 0
        self.last_error: str | None = None
        self._backoff = backoff_min

    # -- called by the stream, never blocking --------------------------------------------------

    def notify(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def statistics(self) -> dict[str, Any]:
        return {
            "id": self.drain.id,
            "url": redact(self.drain.url),
            "connected": self.connected,
            "buffered": len(self.buffer),
            "sent": self.sent_total,
            "batches": self.batches_total,
            "dropped": self.buffer.dropped_total,
            "connects": self.connects_total,
            "failures": self.failures_total,
            "last_error": self.last_error,
        }

    # -- the task -----------------------------------------------------------------------------

    async def run(self) -> None:
        with self.cancel_scope:
            try:
                if self.target.is_http:
                    await self._run_http()
                else:
                    await self._run_syslog()
            finally:
                self.connected = False

    async def _wait_pending(self) -> None:
        while not self.buffer.pending:
            event = self._wakeup = trio.Event()
            await event.wait()

    def _failed(self, exc: BaseException | str) -> None:
        self.failures_total += 1
        self.connected = False
        if not isinstance(exc, str):
            # trio wraps the real reason (say an SSLError: certificate verify failed) in a
            # BrokenResourceError; the cause is what an operator needs to read.
            while exc.__cause__ is not None and not str(exc):
                exc = exc.__cause__
            exc = f"{type(exc).__name__}: {exc}".rstrip(": ")
        self.last_error = exc

    async def _back_off(self) -> None:
        await trio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, self.backoff_max)

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = self._ssl_context_factory()
        return self._ssl_context

    # -- syslog / syslog+tls ------------------------------------------------------------------

    async def _connect_syslog(self) -> trio.abc.Stream:
        with trio.fail_after(self.connect_timeout):
            tcp = await trio.open_tcp_stream(self.target.host, self.target.port)
            if not self.target.tls:
                return tcp
            stream = trio.SSLStream(tcp, self._context(), server_hostname=self.target.host)
            try:
                await stream.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            return stream

    async def _run_syslog(self) -> None:
        while True:
            await self._wait_pending()
            try:
                stream = await self._connect_syslog()
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, ssl.SSLError) as exc:
                self._failed(exc)
                await self._back_off()
                continue
            self.connected = True
            self.connects_total += 1
            try:
                async with stream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_peer, stream)
                    await self._send_syslog(stream)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                    ssl.SSLError, _PeerClosed) as exc:
                self._failed(exc)
            except BaseExceptionGroup as group:  # the watcher and the sender failed together
                _, rest = group.split((OSError, trio.TooSlowError, trio.BrokenResourceError,
                                       trio.ClosedResourceError, ssl.SSLError, _PeerClosed))
                if rest is not None:
                    raise rest from None
                self._failed(group.exceptions[0])
            await self._back_off()

    async def _watch_peer(self, stream: trio.abc.Stream) -> None:
        """A syslog receiver never sends: EOF or an error here means the connection is gone."""
        while True:
            data = await stream.receive_some(4096)
            if not data:
                raise _PeerClosed("the receiver closed the connection")

    async def _send_syslog(self, stream: trio.abc.Stream) -> None:
        host = self.drain.token
        while True:
            await self._wait_pending()
            batch = self.buffer.take(self.buffer.capacity, time.time())
            data = syslog.frames(batch.lines, host)
            try:
                with trio.fail_after(self.send_timeout):
                    await stream.send_all(data)
            except BaseException:
                self.buffer.lost(batch, time.time())
                raise
            self._delivered(batch)

    def _delivered(self, batch: Batch) -> None:
        self.sent_total += batch.line_count
        self.batches_total += 1
        self._backoff = self.backoff_min

    # -- http(s) ------------------------------------------------------------------------------

    async def _run_http(self) -> None:
        import httpx  # the HTTP client is only loaded by hosts that have HTTPS drains

        target = self.target
        auth = (target.username or "", target.password or "") if target.username is not None else None
        verify: ssl.SSLContext | bool = self._context() if target.tls else False
        timeout = httpx.Timeout(self.send_timeout, connect=self.connect_timeout)
        async with httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=False,
                                     headers={"User-Agent": USER_AGENT}) as client:
            while True:
                await self._wait_pending()
                batch = self.buffer.take(self.buffer.capacity, time.time())
                await self._post_until_done(client, batch, auth)

    async def _post_until_done(self, client: Any, batch: Batch, auth: tuple[str, str] | None) -> None:
        import httpx

        body = syslog.frames(batch.lines, HTTP_SYSLOG_HOST)
        headers = {
            "Content-Type": "application/logplex-1",
            "Logplex-Msg-Count": str(len(batch.lines)),
            "Logplex-Frame-Id": secrets.token_hex(16).upper(),
            "Logplex-Drain-Token": self.drain.token,
        }
        try:
            while True:
                try:
                    response = await client.post(self.target.post_url, content=body, headers=headers,
                                                 auth=auth)
                except httpx.HTTPError as exc:
                    self._failed(exc)
                    await self._back_off()
                    continue
                self.connected = True
                status = response.status_code
                if 200 <= status < 300:
                    self._delivered(batch)
                    return
                self._failed(f"HTTP {status} from the drain")
                if 400 <= status < 500 and status not in (408, 429):
                    self.buffer.lost(batch, time.time())
                    return
                await self._back_off()
        except BaseException:  # cancelled mid-POST: the batch did not surely arrive
            self.buffer.lost(batch, time.time())
            raise
