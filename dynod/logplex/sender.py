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
- plain syslog writes eagerly: while the connection is up, ``offer`` frames the lines and writes
  them straight into the non-blocking socket (after what the kernel did not take last time), so
  a receiver that keeps up gets every line; only what the kernel will not take yet waits in the
  buffer (and only that can overflow into L10). Order holds: every write is synchronous, the
  leftover first;
- HTTPS (Logplex's drain protocol): one POST per batch with Content-Type application/logplex-1,
  Logplex-Msg-Count, Logplex-Frame-Id and Logplex-Drain-Token; a failed POST is retried with the
  same Frame-Id (receivers may de-duplicate by it) until it succeeds, except a 4xx other than 408
  and 429, which would fail again forever: that batch is counted lost.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import trio

from . import syslog
from .drain import Batch, Drain, DrainBuffer, DrainTarget, redact
from .egress import DrainEgress

USER_AGENT = "dynod-logplex/0.1"
# Heroku's HTTPS drains write this in the HOST field and carry the token in a header.
HTTP_SYSLOG_HOST = "host"
# A syslog drain socket's kernel send buffer: ~22,000 framed 100-byte lines (~190 bytes each),
# 0.2 s of a receiver's stall at 100k lines/s. A limit, not an allocation: the kernel takes memory
# only for bytes the receiver has not read yet, and counts twice this for its bookkeeping, so a
# drain holds at most ~8 MiB of kernel memory besides its 1,024-line buffer. Forced past
# net.core.wmem_max when dynod may (CAP_NET_ADMIN), so the bound is the same on every host.
SEND_BUFFER_BYTES = 4 << 20
# Linux's SO_SNDBUFFORCE (asm-generic/socket.h); Python's socket module does not name it.
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


_NOTHING_UNSENT = Batch([], 0, 0, 0.0)


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
        egress: DrainEgress | None = None,
    ) -> None:
        self.drain = drain
        # Every connect resolves the host and checks each address (egress.py); None: the strict default.
        self.egress = egress or DrainEgress()
        self._address: str | None = None  # the checked address HTTP posts go to, until one fails
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
        self.eager_total = 0  # lines written straight from offer()
        self.deferrals_total = 0  # times the socket was full and the task took over
        self._eager_fd: int | None = None  # set while a plain syslog connection is idle
        self._unsent = b""  # the tail of an eager write the kernel did not take
        self._unsent_batch = _NOTHING_UNSENT  # what _unsent holds, for the L10 if it is lost
        self._progress_at = 0.0  # trio clock of the last write the kernel took bytes from

    # -- called by the stream, never blocking --------------------------------------------------

    def offer(self, lines: list[str], now: float) -> None:
        """New lines for the drain: buffered, and written at once while the connection is up."""
        self.buffer.push(lines, now)
        # A quarter full: write now, a round's flood must not overflow it before the task runs.
        # Less (a few emitted lines): the task writes them on its turn, many in one write(2).
        if self._eager_fd is not None and len(self.buffer) >= self.buffer.capacity // 4:
            self._flush_nowait(self._eager_fd, now)
        else:
            self.notify()

    def _flush_nowait(self, fd: int, now: float) -> None:
        """What the kernel did not take last time, then everything buffered (an L10 line first,
        if owed), into the socket without waiting. What it does not take now becomes ``_unsent``
        and goes first next time. Called from ``offer`` and from the task alike, and never
        awaiting, so the bytes keep their order whoever writes them. A full socket does not shut
        this path: TCP takes bytes again as soon as the receiver frees any room, while poll(2)
        reports it writable only once a third of the send buffer is free (~5,000 lines at 100k
        lines/s, five times this buffer), so waiting for that alone overflowed the buffer after
        every hiccup of a receiver that keeps up on average."""
        if self._unsent:
            written = self._write(fd, self._unsent)
            if written:
                self._progress_at = trio.current_time()
            if written < len(self._unsent):
                self._unsent = self._unsent[written:]
                return
            self._unsent = b""
            self.sent_total += self._unsent_batch.line_count
            self._unsent_batch = _NOTHING_UNSENT
        batch = self.buffer.take(len(self.buffer), now)
        if not batch.lines:
            return
        data = syslog.frames(batch.lines, self.drain.token)
        written = self._write(fd, data)
        if written:
            self._progress_at = trio.current_time()
        if written == len(data):
            self.eager_total += batch.line_count
            self._delivered(batch)
            return
        self.deferrals_total += 1
        self._unsent = data[written:]
        not_written = _lines_not_written(batch.lines, written, self.drain.token)
        l10_unwritten = batch.carried_drops > 0 and not_written == len(batch.lines)
        buffered_unwritten = min(not_written, batch.line_count)
        self._unsent_batch = Batch([], buffered_unwritten, batch.carried_drops if l10_unwritten else 0,
                                   batch.carried_since)
        self.sent_total += batch.line_count - buffered_unwritten
        self.notify()

    @staticmethod
    def _write(fd: int, data: bytes) -> int:
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise
            return 0  # the watcher task is about to see the broken connection too

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
            "eager": self.eager_total,
            "deferrals": self.deferrals_total,
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
                self._eager_fd = None

    async def _wait_pending(self) -> None:
        while not self.buffer.pending and not self._unsent:
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
            tcp = await self._open_checked_tcp()
            # The kernel's send buffer rides out a receiver's scheduling hiccups (10 ms is 1,000
            # lines at 100k lines/s, the whole drain buffer): lines waiting there are not dropped.
            try:
                tcp.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER_BYTES)
            except PermissionError:  # not root (the unit tests): what net.core.wmem_max allows
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            if not self.target.tls:
                return tcp
            stream = trio.SSLStream(tcp, self._context(), server_hostname=self.target.host)
            try:
                await stream.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            return stream

    async def _open_checked_tcp(self) -> trio.SocketStream:
        """A TCP connection to one of the host's addresses, each checked before it is tried."""
        addresses = await self.egress.resolve(self.target.host, self.target.port)
        failure: OSError | None = None
        for address in addresses:
            try:
                # An address literal: trio does no lookup of its own, so what was checked is what is used.
                return await trio.open_tcp_stream(address, self.target.port)
            except OSError as exc:
                failure = exc
        assert failure is not None
        raise failure

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
        # Eager writes need the raw socket; TLS goes through trio's SSLStream, a batch at a time.
        if not isinstance(stream, trio.SocketStream):
            while True:
                await self._wait_pending()
                await self._send_batch(stream, self.drain.token)
        sock = stream.socket
        fd = sock.fileno()
        self._progress_at = trio.current_time()
        try:
            self._eager_fd = fd
            while True:
                self._flush_nowait(fd, time.time())  # what waited for this turn or for room
                if not self._unsent:
                    await self._wait_pending()
                    continue
                # The socket is full: wait for room, and give up on a receiver that takes
                # nothing (from here or from ``offer``) for send_timeout.
                with trio.move_on_after(self.send_timeout):
                    await trio.lowlevel.wait_writable(sock)
                if trio.current_time() - self._progress_at >= self.send_timeout:
                    raise trio.TooSlowError(f"the receiver took nothing for {self.send_timeout:g} s")
        finally:
            self._eager_fd = None
            if self._unsent:  # never surely arrived: counted into the next L10
                self.buffer.lost(self._unsent_batch, time.time())
                self._unsent = b""
                self._unsent_batch = _NOTHING_UNSENT

    async def _send_batch(self, stream: trio.abc.Stream, host: str) -> None:
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
        headers["Host"] = self.target.host_header
        # TLS is checked against the name in the URL, not the address the POST goes to.
        extensions = {"sni_hostname": self.target.host} if self.target.tls else {}
        try:
            while True:
                try:
                    if self._address is None:
                        with trio.fail_after(self.connect_timeout):
                            self._address = (await self.egress.resolve(self.target.host, self.target.port))[0]
                    response = await client.post(self.target.post_url_to(self._address), content=body,
                                                 headers=headers, auth=auth, extensions=extensions)
                except (httpx.HTTPError, OSError, trio.TooSlowError) as exc:
                    self._address = None  # look the name up (and check it) again
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


def _lines_not_written(lines: list[str], written: int, host: str) -> int:
    """How many of ``lines``, framed, are not wholly within the first ``written``
    bytes. Only a partial eager write asks, so framing each line again costs nothing that matters."""
    end = 0
    for index, line in enumerate(lines):
        end += len(syslog.frames([line], host))
        if end > written:
            return len(lines) - index
    return 0

