"""The data plane of one worker: a client connection's requests, each proxied to one web dyno.

One task per client connection reads requests in order (so pipelined requests are answered in order),
picks a dyno from the current route table, and relays the response. Bodies are streamed in both
directions as they arrive; a request body that is already in hand goes in the same write as its head,
and only a body still arriving gets a second task, so the common request costs no task spawn.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from random import Random
from typing import TYPE_CHECKING, Any

import trio

from . import codes
from .codes import RouterCode
from .headers import LAST_CHUNK, chunk, client_head, pick_request_id, upstream_head
from .logline import AccessRecord
from .netio import ConnectRefused, ConnectTimeout, Pipe, SocketPipe, SpliceSourceEnded, splice_exactly
from .options import RouterOptions
from .parse import (
    CHUNKED,
    END,
    LENGTH,
    NO_BODY,
    UNTIL_CLOSE,
    Body,
    ProtocolError,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    Tunnel,
)
from .pool import DynoConn, DynoPool
from .routes import AppRoute, DynoRoute, RouteTable, challenge_answer, choose_dyno

if TYPE_CHECKING:
    from .plane import PlainPlane
    from .shares import ConnectionShares

LogSink = Callable[[AccessRecord], None]
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_now = time.monotonic


class _ClientGone(Exception):
    """The client closed or reset its connection, or stalled past the idle window."""


class _Failure(Exception):
    """The request failed with a Heroku code; ``sent`` says whether the client already got bytes."""

    def __init__(self, code: RouterCode, *, sent: bool = False) -> None:
        super().__init__(code.code)
        self.code = code
        self.sent = sent


class _StaleConn(Exception):
    """A reused dyno connection was closed before it answered: safe to resend on a fresh one."""


class _Upload:
    """What the body-upload task tells the response relay."""

    __slots__ = ("done", "broken", "client_gone")

    def __init__(self) -> None:
        self.done = False  # the whole body reached the dyno
        self.broken = False  # the dyno stopped reading (closed or reset) mid-body
        self.client_gone = False


# A request the plane handed over had its whole body sent already.
_SENT = _Upload()
_SENT.done = True

# What a connection is waiting for, which says what its deadline means when it passes.
_WAKE_RETRY = 1.0  # seconds between asks to wake a sleeping app while a request is held
_BUSY = 0  # no deadline (routing, holding for boot, connecting: those have their own timeouts)
_KEEPALIVE = 1  # between requests: close quietly
_HEAD = 2  # mid-head: 408, then close (slowloris)
_FIRST_BYTE = 3  # request sent, no response yet: H12
_STREAMING = 4  # response started: H15 (rolling)
_TUNNEL = 5  # WebSocket passthrough: close quietly (rolling)
_INF = float("inf")
# Bodies at least this long still to come go kernel to kernel (splice); shorter ones are not worth a pipe.
_SPLICE_MIN = 128 * 1024



def _take_body(events: deque[Any], chunked: bool, out: list[bytes], upload: _Upload) -> None:
    """Move the body pieces already parsed (up to the end of the request) into ``out``, framed."""
    while events:
        ev = events[0]
        if type(ev) is Body:
            events.popleft()
            out.append(chunk(ev.data) if chunked else ev.data)
        elif ev is END:
            events.popleft()
            if chunked:
                out.append(LAST_CHUNK)
            upload.done = True
            return
        else:
            return


class _Client:
    """One client connection: what the log line needs, and its single deadline.

    A cancel scope per wait costs more than the proxying itself here, so each connection has one
    scope for its whole life and a plain float deadline that the proxy's watchdog checks a few
    times a second; moving a deadline is an attribute store.
    """

    __slots__ = ("pipe", "ip", "ip_bytes", "proto", "proto_bytes", "port_bytes", "scope", "deadline",
                 "phase", "expired", "reply", "in_plane", "reader", "readable", "ended", "received", "out",
                 "exchange", "close_after")

    def __init__(self, pipe: Pipe, ip: str, proto: str, port: int) -> None:
        self.pipe = pipe
        self.ip = ip
        self.ip_bytes = ip.encode()
        self.proto = proto
        self.proto_bytes = proto.encode()
        self.port_bytes = str(port).encode()
        self.scope = trio.CancelScope()
        self.deadline = _INF
        self.phase = _BUSY
        self.expired = _BUSY  # the phase whose deadline passed, once the watchdog fired
        self.reply = b""  # what to tell the client after an expiry (408, H12's 503)
        # While the plain-HTTP plane (plane.py) owns the connection, instead of a trio task:
        self.in_plane = False
        self.reader: RequestReader | None = None
        self.readable = True  # bytes may be waiting (edge-triggered: the edge may have passed)
        self.ended = False  # the client's end (FIN) is among them
        self.received = False  # bytes of a request arrived since the connection last went idle
        self.out = b""  # what the client's socket did not take yet
        self.exchange: Any = None  # the plane's request in progress
        self.close_after = False  # close once ``out`` is written

    def wait_for(self, phase: int, seconds: float) -> None:
        self.phase = phase
        self.deadline = _now() + seconds


class Resume:
    """A request the plain-HTTP plane started and hands to trio: what its exchange had got to.

    With ``conn`` None the request was sent on a pooled connection that turned out closed: trio
    resends it on a fresh connection to ``dyno``. Otherwise the dyno's response head is parsed (in
    ``conn.reader.events``) and trio relays from there (interim heads, upgrades, chunked or
    close-delimited bodies, long bodies for splice).
    """

    __slots__ = ("head", "app", "dyno", "conn", "connect_s", "request_id", "start", "start_wall",
                 "service_start", "up")

    def __init__(self, head: RequestHead, app: AppRoute, dyno: DynoRoute, conn: DynoConn | None,
                 connect_s: float, request_id: bytes, start: float, start_wall: float, service_start: float,
                 up: bytes) -> None:
        self.head = head
        self.app = app
        self.dyno = dyno
        self.conn = conn
        self.connect_s = connect_s
        self.request_id = request_id
        self.start = start
        self.start_wall = start_wall
        self.service_start = service_start
        self.up = up


class Proxy:
    """Routes and relays requests for one worker process."""

    def __init__(self, options: RouterOptions, emit_log: LogSink, rng: Random | None = None) -> None:
        self.options = options
        self.emit_log = emit_log
        # Asks dynod to wake a sleeping app (the worker sends it up with the log lines).
        self.wake_app: Callable[[str], None] = lambda name: None
        self.rng = rng or Random()
        self.table = RouteTable((), options.base_domain)
        self._routes_changed = trio.Event()
        self.pool = DynoPool(max_idle=options.pool_idle, idle_timeout=options.pool_idle_timeout)
        self.connections = 0
        # The workers' shared counts (shares.py), so that accepts spread over them; None alone.
        self.shares: ConnectionShares | None = None
        self.handshaking = 0  # TLS connections accepted, their handshake not done: not clients yet
        self.requests = 0
        self.bodies_spliced = 0
        self.codes: Counter[str] = Counter()
        self._clients: set[_Client] = set()
        # Connections with no request in hand (fresh, or kept alive between requests), oldest first:
        # when the worker is full, the oldest is closed to make room for a new one.
        self._idle: dict[_Client, None] = {}
        self._draining = False
        # The plain-HTTP data plane (plane.py), when the worker runs one; trio serves everything then
        # hands back to it between requests.
        self.plane: PlainPlane | None = None

    def statistics(self) -> dict[str, object]:
        return {"connections": self.connections, "requests": self.requests, "codes": dict(self.codes),
                "dyno_conns_opened": self.pool.opened, "dyno_conns_reused": self.pool.reused,
                "dyno_conns_idle": self.pool.idle_count(), "bodies_spliced": self.bodies_spliced,
                "plane_requests": self.plane.requests if self.plane is not None else 0,
                "plane_requests_c": self.plane.requests_c if self.plane is not None else 0,
                "plane_responses_c": self.plane.responses_c if self.plane is not None else 0}

    def draining(self) -> None:
        """Stop keeping connections alive: idle ones close now, busy ones after their response."""
        self._draining = True
        for client in list(self._clients):
            if client.phase == _KEEPALIVE:
                self._cancel(client)

    def _cancel(self, client: _Client) -> None:
        if client.in_plane:
            assert self.plane is not None
            self.plane.expire(client)
        else:
            client.scope.cancel()

    def evict_idle(self) -> bool:
        """Close the oldest connection that has sent nothing of a request; False if there is none.

        At max_connections a new client would get a 503 while thousands of others sit idle: a
        client that is not in the middle of a request loses least by going (a kept-alive one
        reconnects), so that the one that came to ask something is served.
        """
        for client in self._idle:
            del self._idle[client]
            self.codes["evicted_idle"] += 1
            self._cancel(client)
            return True
        return False

    def set_routes(self, table: RouteTable) -> None:
        """Swap in a new table: in-flight requests keep their dyno; held requests look again."""
        self.table = table
        self.pool.retain(d.addr for app in table.apps.values() for d in app.dynos)
        changed, self._routes_changed = self._routes_changed, trio.Event()
        changed.set()

    # ---------------------------------------------------------------- client connection
    async def watch_deadlines(self) -> None:
        """Cancel connections whose deadline passed; runs for the worker's life."""
        opts = self.options
        shortest = min(opts.header_timeout, opts.request_timeout, opts.idle_timeout, opts.keepalive_timeout)
        period = min(0.25, shortest / 5)
        clients = self._clients
        while True:
            await trio.sleep(period)
            now = _now()
            for client in [c for c in clients if c.deadline <= now]:
                client.expired = client.phase
                client.deadline = _INF
                self._cancel(client)

    def accept(self, pipe: Pipe, ip: str, proto: str, port: int) -> _Client:
        """Count in a new client connection (its first head is due within header_timeout)."""
        self.connections += 1
        self._publish()
        client = _Client(pipe, ip, proto, port)
        self._clients.add(client)
        # A connection that never sends a head must not sit out the keep-alive window (10k of them
        # starved the worker).
        client.wait_for(_HEAD, self.options.header_timeout)
        return client

    async def serve(self, pipe: Pipe, ip: str, proto: str, port: int) -> None:
        """Serve one client connection until it closes; never raises."""
        await self.resume(self.accept(pipe, ip, proto, port), RequestReader())

    async def resume(self, client: _Client, reader: RequestReader, resume: Resume | None = None) -> None:
        """Serve a client connection from where its reader (and ``resume``) left it, until it closes
        or goes back to the plain-HTTP plane; never raises."""
        pipe = client.pipe
        client.scope = trio.CancelScope()  # a scope is entered once: one per stay in trio
        if client.expired != _BUSY:
            client.scope.cancel()  # its deadline passed between the plane's hand-over and this task
        handed_back = False  # the plane has it (and may even have handed it to a new task already)
        try:
            with client.scope:
                handed_back = await self._serve(client, reader, resume)
            if client.reply:
                await _send_quietly(pipe, client.reply)
        except (_ClientGone, OSError):
            pass
        except Exception:  # a bug must cost one connection, never the worker
            traceback.print_exc(file=sys.stderr)
        finally:
            if not handed_back:
                self.forget(client)

    def forget(self, client: _Client) -> None:
        """The client connection is over: close it and stop counting it."""
        self._clients.discard(client)
        self._idle.pop(client, None)
        client.pipe.close()
        self.connections -= 1
        self._publish()

    def held(self) -> int:
        """The connections this worker holds: its clients and the TLS ones still in their handshake."""
        return self.connections + self.handshaking

    def handshake_started(self) -> None:
        self.handshaking += 1
        self._publish()

    def handshake_ended(self) -> None:
        self.handshaking -= 1
        self._publish()

    def _publish(self) -> None:
        if self.shares is not None:
            self.shares.publish(self.held())

    async def _serve(self, client: _Client, reader: RequestReader, resume: Resume | None) -> bool:
        """Serve requests until the connection ends (False) or goes back to the plane (True)."""
        opts = self.options
        events = reader.events
        pipe = client.pipe
        # A new connection's request is usually in already; after an answer, the next cannot be.
        recv = pipe.recv if client.phase == _HEAD else pipe.recv_later
        if resume is not None:
            if not await self._handle(client, reader, resume.head, resume):
                return False
        while True:
            if not events:
                if self._draining:
                    return False
                plane = self.plane
                if plane is not None and client.phase != _HEAD and type(pipe) is SocketPipe:
                    plane.adopt(client, reader)  # between requests: the plane waits cheaper
                    return True
                if client.phase != _HEAD:
                    client.wait_for(_KEEPALIVE, opts.keepalive_timeout)
                received = False
                idle = self._idle
                idle[client] = None
                while not events:
                    try:
                        data = await recv()
                    except trio.Cancelled:
                        if client.expired == _HEAD and received:  # a head that never ends (slowloris)
                            client.reply = codes.bad_request_response(408)
                        raise
                    if not data:
                        return False
                    if not received:
                        received = True
                        idle.pop(client, None)
                    if client.phase == _KEEPALIVE:
                        client.wait_for(_HEAD, opts.header_timeout)
                    try:
                        reader.feed(data)
                    except ProtocolError as exc:
                        client.reply = codes.bad_request_response(exc.status)
                        return False
            recv = pipe.recv_later
            client.phase = _BUSY
            client.deadline = _INF
            head = events.popleft()
            if type(head) is not RequestHead:
                return False  # bytes after a refused upgrade: nothing more can be parsed here
            self.requests += 1
            if not await self._handle(client, reader, head):
                return False

    async def _handle(self, client: _Client, reader: RequestReader, head: RequestHead,
                      resume: Resume | None = None) -> bool:
        """Answer one request; True when the client connection may carry another."""
        if resume is not None:
            return await self._forward(client, reader, head, resume.app, resume.request_id, resume.start,
                                       resume.start_wall, resume)
        start_wall = time.time()
        app = self.table.lookup(head.host)
        if app is None:
            keep = head.keep_alive and _drop_body(reader)
            await _send(client.pipe, codes.not_found_response(keep_alive=keep,
                                                              head_only=head.method == b"HEAD"))
            return keep
        request_id = pick_request_id(head)
        if app.challenges:  # only while dynod is proving a domain to an ACME server
            answer = challenge_answer(app, head.method, head.target)
            if answer is not None:
                return await self._answer_challenge(client, reader, head, app, request_id, answer)
        return await self._forward(client, reader, head, app, request_id, _now(), start_wall, None)

    async def _forward(self, client: _Client, reader: RequestReader, head: RequestHead, app: AppRoute,
                       request_id: bytes, start: float, start_wall: float, resume: Resume | None) -> bool:
        """Proxy one request to a dyno of ``app`` (or go on with the one the plane started)."""
        dyno: DynoRoute | None = None
        connect_s: float | None = None
        try:
            if resume is not None:
                dyno, connect_s = resume.dyno, resume.connect_s
                conn = resume.conn if resume.conn is not None else await self._connect_to(dyno)
            else:
                if app.maintenance:
                    raise _Failure(codes.H80)
                if not app.dynos and (app.booting or app.sleeping):
                    app = await self._wait_for_boot(app.name, start + self.options.boot_timeout)
                    if app is None:
                        raise _Failure(codes.H14)
                    if not app.dynos and (app.booting or app.sleeping):
                        raise _Failure(codes.H20)
                if not app.dynos:
                    raise _Failure(codes.H10 if app.crashed else codes.H14)
                dyno, conn, connect_s = await self._connect(app)
            addr = conn.addr
            in_flight = self.pool.in_flight
            in_flight[addr] = in_flight.get(addr, 0) + 1
            try:
                if resume is None:
                    up = upstream_head(head, client_ip=client.ip_bytes, proto=client.proto_bytes,
                                       port=client.port_bytes, request_id=request_id,
                                       start_ms=int(start_wall * 1000))
                    service_start = _now()
                else:
                    up, service_start = resume.up, resume.service_start
                try:
                    if resume is not None and resume.conn is not None:
                        # The plane sent the request and has the response's head parsed: relay on.
                        status, nbytes, keep, tunnel = await self._relay(client, head, conn, _SENT, False,
                                                                         started=True)
                    else:
                        status, nbytes, keep, tunnel = await self._exchange(client, reader, head, conn, up)
                except _StaleConn:
                    conn.close()
                    conn = await self._connect_to(dyno)
                    status, nbytes, keep, tunnel = await self._exchange(client, reader, head, conn, up)
            except BaseException:
                conn.close()  # never pool a connection whose exchange did not finish
                raise
            finally:
                in_flight[addr] -= 1
        except trio.Cancelled:
            expired = client.expired
            if expired == _FIRST_BYTE or expired == _STREAMING:
                code = codes.H12 if expired == _FIRST_BYTE else codes.H15
                self.codes[code.code] += 1
                self._log(app.name, head, client, request_id, dyno, connect_s, _now() - start,
                          code.status, 0, code)
                if expired == _FIRST_BYTE:
                    client.reply = codes.error_response(code, keep_alive=False,
                                                        head_only=head.method == b"HEAD")
            raise
        except _Failure as failure:
            code = failure.code
            self.codes[code.code] += 1
            service = None if dyno is None else _now() - start
            self._log(app.name, head, client, request_id, dyno, connect_s, service,
                      code.status, 0 if dyno is not None else None, code)
            if failure.sent or code is codes.H27:
                return False
            keep = head.keep_alive and _drop_body(reader)
            await _send(client.pipe, codes.error_response(code, keep_alive=keep,
                                                          head_only=head.method == b"HEAD"))
            return keep
        self._log(app.name, head, client, request_id, dyno, connect_s, _now() - service_start,
                  status, nbytes, None)
        if tunnel is not None:
            events = reader.events
            client_first = events.pop().data if events and type(events[-1]) is Tunnel else b""
            await self._tunnel(client, conn, client_first, tunnel)
            return False
        return keep

    async def _answer_challenge(self, client: _Client, reader: RequestReader, head: RequestHead, app: AppRoute,
                                request_id: bytes, answer: bytes) -> bool:
        """Serve an ACME HTTP-01 key authorization (whatever the app's dynos, even in maintenance)."""
        keep = head.keep_alive and _drop_body(reader)
        await _send(client.pipe, b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\n%s\r\n%s" % (len(answer), b"" if keep else b"Connection: close\r\n",
                                                      answer))
        self._log(app.name, head, client, request_id, None, None, None, 200, len(answer), None)
        return keep

    def _log(self, app: str, head: RequestHead, client: _Client, request_id: bytes,
             dyno: DynoRoute | None, connect: float | None, service: float | None, status: int,
             nbytes: int | None, code: RouterCode | None) -> None:
        # A tuple now, a line later: the worker formats a whole batch when it sends it to the parent.
        self.emit_log((app, head.method, head.target, head.host, request_id, client.ip_bytes,
                       dyno.name_bytes if dyno else b"", connect, service, status, nbytes, client.proto_bytes,
                       code))

    async def _wait_for_boot(self, name: str, deadline: float) -> AppRoute | None:
        """Hold a request while the app's web dynos boot (or a sleeping app wakes); released the
        moment one is up (H20)."""
        while True:
            app = self.table.apps.get(name)
            if app is None or app.dynos or not (app.booting or app.sleeping):
                return app
            wait = max(0.0, deadline - _now())
            if app.sleeping:
                # Asked again every second while it sleeps: a wake sent while dynod was away is lost.
                self.wake_app(name)
                wait = min(wait, _WAKE_RETRY)
            with trio.move_on_after(wait):
                await self._routes_changed.wait()
            if _now() >= deadline:
                return self.table.apps.get(name)

    async def _connect(self, app: AppRoute) -> tuple[DynoRoute, DynoConn, float]:
        """A connection to a random dyno, trying others on failure (H19 timeout, H21 refused)."""
        tried: list[DynoRoute] = []
        timed_out = False
        pool = self.pool
        while len(tried) < self.options.connect_attempts:
            dyno = choose_dyno(app, pool.in_flight, self.rng, tried)
            if dyno is None:
                break
            conn = pool.take_idle(dyno.addr)
            if conn is not None:
                return dyno, conn, 0.0
            t0 = _now()
            try:
                conn = await pool.connect(dyno.addr, self.options.connect_timeout)
                return dyno, conn, _now() - t0
            except ConnectTimeout:
                timed_out = True
            except (ConnectRefused, OSError):
                pass
            tried.append(dyno)
        raise _Failure(codes.H19 if timed_out else codes.H21)

    async def _connect_to(self, dyno: DynoRoute) -> DynoConn:
        try:
            return await self.pool.connect(dyno.addr, self.options.connect_timeout)
        except ConnectTimeout:
            raise _Failure(codes.H19) from None
        except (ConnectRefused, OSError):
            raise _Failure(codes.H21) from None

    # ---------------------------------------------------------------- one request/response
    async def _exchange(self, client: _Client, reader: RequestReader, head: RequestHead,
                        conn: DynoConn, up: bytes) -> tuple[int, int, bool, bytes | None]:
        """Send the request, relay the response; (status, body bytes, client keep-alive, tunnel)."""
        events = reader.events
        chunked = head.framing == CHUNKED
        out = [up]
        upload = _Upload()
        # Whatever part of the body is already parsed goes out with the head, in one write.
        _take_body(events, chunked, out, upload)
        if head.framing == NO_BODY:
            # A retry on a fresh connection (a pooled one had gone stale) finds the END event
            # already taken by the first attempt: a bodiless request is complete all the same.
            upload.done = True
        # Only a bodiless request can be sent again: a body, once read from the client, is gone.
        resendable = conn.reused and head.framing == NO_BODY
        try:
            await conn.pipe.send_all(b"".join(out) if len(out) > 1 else up)
        except OSError:
            conn.close()
            if resendable:
                raise _StaleConn() from None
            raise _Failure(codes.H13 if upload.done else codes.H18) from None
        stale_ok = resendable and head.method in _IDEMPOTENT
        if upload.done:
            return await self._relay(client, head, conn, upload, stale_ok)
        result = None
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._upload, client, reader, conn, chunked, upload, nursery.cancel_scope)
            try:
                result = await self._relay(client, head, conn, upload, False)
            except (_Failure, _ClientGone) as exc:
                failure = exc
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if result is None:  # the upload task saw the client leave and cancelled the relay
            conn.close()
            raise _Failure(codes.H27)
        status, nbytes, _keep, tunnel = result
        # The client's body was not read to its end: the next request's start cannot be found.
        return status, nbytes, False, tunnel

    async def _upload(self, client: _Client, reader: RequestReader, conn: DynoConn,
                      chunked: bool, upload: _Upload, scope: trio.CancelScope) -> None:
        """Stream the rest of a request body from the client to the dyno as it arrives."""
        events = reader.events
        idle = self.options.idle_timeout
        while True:
            out: list[bytes] = []
            _take_body(events, chunked, out, upload)
            if out:
                try:
                    await conn.pipe.send_all(b"".join(out))
                except OSError:
                    upload.broken = True  # the dyno stopped reading; its answer (or silence) tells why
                    return
            if upload.done:
                if client.phase == _FIRST_BYTE:  # H12's 30 s start once the whole request is in
                    client.deadline = _now() + self.options.request_timeout
                return
            data = b""
            with trio.move_on_after(idle):
                try:
                    data = await client.pipe.recv()
                except OSError:
                    data = b""
            if data:
                try:
                    reader.feed(data)
                    continue
                except ProtocolError:
                    pass
            upload.client_gone = True
            scope.cancel()
            return

    async def _relay(self, client: _Client, head: RequestHead, conn: DynoConn, upload: _Upload,
                     stale_ok: bool, started: bool = False) -> tuple[int, int, bool, bytes | None]:
        opts = self.options
        pipe = conn.pipe
        rr = conn.reader
        if not started:  # else the plane started this reader and its H12 clock
            rr.start(head_only=head.method == b"HEAD")
            client.wait_for(_FIRST_BYTE, opts.request_timeout)
        revents = rr.events
        client_pipe = client.pipe
        client_11 = head.http_version != "1.0"
        if not upload.done:
            client.deadline = _INF  # the upload task starts the clock when the body is in
        got_any = False
        # The dyno has only just been sent the request: wait before reading (see recv_later).
        recv = pipe.recv_later
        # Interim (1xx) heads are passed on; the final head decides the framing for the client.
        while True:
            while not revents:
                try:
                    data = await recv()
                except OSError:
                    data = b""
                if not data:
                    conn.close()
                    if stale_ok and not got_any:
                        raise _StaleConn()
                    raise _Failure(codes.H13 if upload.done and not got_any else codes.H18)
                got_any = True
                recv = pipe.recv
                try:
                    rr.feed(data)
                except ProtocolError:
                    conn.close()
                    raise _Failure(codes.H13) from None
            rhead = revents.popleft()
            if type(rhead) is not ResponseHead:
                conn.close()
                raise _Failure(codes.H13)
            if rhead.status >= 200 or rhead.status == 101:
                break
            if revents and revents[0] is END:
                revents.popleft()
            if client_11:
                await _send(client_pipe, client_head(rhead, framing=NO_BODY, keep_alive=True,
                                                     client_version="1.1"))
        status = rhead.status
        if status == 101:
            if not head.upgrade or not revents or type(revents[-1]) is not Tunnel:
                conn.close()
                raise _Failure(codes.H13)
            await _send(client_pipe, client_head(rhead, framing=NO_BODY, keep_alive=False,
                                                 client_version=head.http_version))
            return 101, 0, False, revents.pop().data
        framing = rhead.framing
        if framing == CHUNKED or framing == UNTIL_CLOSE:
            framing = CHUNKED if client_11 else UNTIL_CLOSE
        keep = head.keep_alive and framing != UNTIL_CLOSE and not head.upgrade and upload.done
        chunked_out = framing == CHUNKED
        out = [client_head(rhead, framing=framing, keep_alive=keep, client_version=head.http_version)]
        nbytes = 0
        done = False
        sent = False
        idle = opts.idle_timeout
        client.wait_for(_STREAMING, idle)
        if framing == LENGTH and type(client_pipe) is SocketPipe and END not in revents:
            spliced = await self._splice_body(client, client_pipe, conn, rhead, out)
            if spliced is not None:
                nbytes, out, done, sent = spliced, [], True, True
        while True:
            while revents:
                ev = revents.popleft()
                if type(ev) is Body:
                    nbytes += len(ev.data)
                    out.append(chunk(ev.data) if chunked_out else ev.data)
                elif ev is END:
                    done = True
                    break
            if done and chunked_out:
                out.append(LAST_CHUNK)
            if out:
                try:
                    await client_pipe.send_all(b"".join(out) if len(out) > 1 else out[0])
                except OSError:
                    conn.close()
                    raise _Failure(codes.H27, sent=True) from None
                out = []
                sent = True
                client.deadline = _now() + idle  # a slow client is not an idle dyno
            if done:
                break
            try:
                data = await pipe.recv()
            except OSError:
                data = b""
            if not data:
                if rhead.framing == UNTIL_CLOSE:
                    rr.feed(b"")
                    conn.close()
                    done = True
                    continue
                conn.close()
                raise _Failure(codes.H18, sent=sent)
            client.deadline = _now() + idle
            try:
                rr.feed(data)
            except ProtocolError:
                conn.close()
                raise _Failure(codes.H18, sent=sent) from None
        client.phase = _BUSY
        client.deadline = _INF
        if rhead.keep_alive and upload.done and not upload.broken and rhead.framing != UNTIL_CLOSE:
            self.pool.put(conn)
        else:
            conn.close()
        return status, nbytes, keep, None

    async def _splice_body(self, client: _Client, client_pipe: SocketPipe, conn: DynoConn, rhead: ResponseHead,
                           out: list[bytes]) -> int | None:
        """Send a long Content-Length body kernel to kernel (splice(2)); its length, or None when
        it is too short to be worth it (then nothing was sent and the usual relay goes on)."""
        revents = conn.reader.events
        parsed = sum(len(ev.data) for ev in revents)  # only Body events: END is not here yet
        length = _content_length(rhead)
        if length is None or length - parsed < _SPLICE_MIN:
            return None
        while revents:
            out.append(revents.popleft().data)
        idle = self.options.idle_timeout

        def progress() -> None:
            client.deadline = _now() + idle  # a body still moving is not an idle dyno (H15 rolls)

        try:
            await client_pipe.send_all(b"".join(out))
            await splice_exactly(conn.pipe, client_pipe, length - parsed, progress)
        except SpliceSourceEnded:
            conn.close()
            raise _Failure(codes.H18, sent=True) from None
        except OSError:
            conn.close()
            raise _Failure(codes.H27, sent=True) from None
        # llhttp saw only the body's first bytes: a fresh reader for whatever this connection carries next.
        conn.reader = ResponseReader()
        self.bodies_spliced += 1
        return length

    async def _tunnel(self, client: _Client, conn: DynoConn, client_first: bytes, dyno_first: bytes) -> None:
        """Pass bytes both ways after 101 Switching Protocols (WebSocket) until either side ends."""
        idle = self.options.idle_timeout
        client.wait_for(_TUNNEL, idle)

        async def pump(src: Pipe, dst: Pipe, first: bytes, done: trio.CancelScope) -> None:
            try:
                if first:
                    await dst.send_all(first)
                while True:
                    data = await src.recv()
                    if not data:
                        break
                    await dst.send_all(data)
                    client.deadline = _now() + idle
            except OSError:
                pass
            done.cancel()  # one side ended: the tunnel is over

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client.pipe, conn.pipe, client_first, nursery.cancel_scope)
                nursery.start_soon(pump, conn.pipe, client.pipe, dyno_first, nursery.cancel_scope)
        finally:
            conn.close()


def _content_length(head: ResponseHead) -> int | None:
    for name, value in head.headers:
        if len(name) == 14 and name.lower() == b"content-length":
            try:
                return int(value)  # llhttp has refused a malformed or conflicting one already
            except ValueError:
                return None
    return None


def _drop_body(reader: RequestReader) -> bool:
    """Discard an unanswered request's body; True when it was all here (the connection can go on)."""
    events = reader.events
    while events:
        ev = events.popleft()
        if ev is END:
            return True
        if type(ev) is not Body:
            return False
    return False


async def _send(pipe: Pipe, data: bytes) -> None:
    try:
        await pipe.send_all(data)
    except OSError:
        raise _ClientGone() from None


async def _send_quietly(pipe: Pipe, data: bytes) -> None:
    with trio.move_on_after(1.0):
        try:
            await pipe.send_all(data)
        except OSError:
            pass


