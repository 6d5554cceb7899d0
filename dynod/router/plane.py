"""The plain-HTTP data plane: the common request served from one edge-triggered epoll of the worker's own.

Under trio every request costs two parked waits (the client's request, then the dyno's answer), each an
``epoll_ctl``, a task switch and a pass of the scheduler. Here each socket is registered once, edge-
triggered, and one trio task drains the epoll and runs each connection's next step as a plain call:
no task, no coroutine, no cancel scope per connection.

The plane serves what most requests are: plain HTTP/1.x, no upgrade, a body that came whole with its
head (or none), a routed app with up dynos and an idle kept-alive connection to the one chosen, and a
final response framed by Content-Length (or bodiless) that is not long enough to splice. Anything
else goes to trio (``Proxy.resume``) from where the plane had got to: before the request was sent
(404s, ACME answers, maintenance, holds, connects, uploads), after the response head was read
(interim heads, 101, chunked or close-delimited bodies, long bodies for splice), or for a resend on a
fresh connection when a pooled one turns out closed. trio hands the connection back between
requests. The rules, headers, timeouts, codes and log lines are the same ones, mostly the same code.

The common request's bytes are parsed and rewritten in C (``cplane.c``): ``cplane.request`` on a read
that starts a request, ``cplane.relay_response`` for the first read of the dyno's answer (the read,
the rewrite and the send to the client in one call). C takes only a strict subset of HTTP whole in
one read and does what the Python path would have done with it; for anything else it declines and
the bytes go to parse.py's readers as before. With
``DYNOD_ROUTER_PLANE=python`` in the router's environment the plane parses in Python only (for the
bench and the tests that compare the two).
"""

from __future__ import annotations

import os
import select
import sys
import time
import traceback
from typing import Any

import trio

from . import codes
from .codes import RouterCode

try:
    from . import cplane
except ImportError as exc:  # an editable install built it in place; a fresh clone must build it too
    raise ImportError(f"dynod.router.cplane is not built ({exc}): run ./install.sh --deps-only, "
                      "or .venv/bin/pip install -e . after changing cplane.c") from None
from .headers import client_head, pick_request_id, upstream_head
from .netio import RECV_SIZE, wait_readable
from .parse import END, LENGTH, NO_BODY, Body, ProtocolError, RequestHead, RequestReader, ResponseHead
from .pool import DynoConn
from .proxy import (
    _BUSY,
    _FIRST_BYTE,
    _HEAD,
    _IDEMPOTENT,
    _INF,
    _KEEPALIVE,
    _SENT,
    _SPLICE_MIN,
    _STREAMING,
    Proxy,
    Resume,
    _Client,
    _content_length,
    _drop_body,
    _take_body,
)
from .routes import AppRoute, DynoRoute, choose_dyno

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
# The peer's end (FIN, reset) comes with the bytes before it as one edge: after it, a short read no
# longer means the socket is empty, and the end must be read too.
_ENDED = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_BATCH = 256  # events per epoll_wait
# A request longer than this (head and body) goes through trio, whose writes wait for room; the
# plane's request goes in one write to a dyno socket that is idle, so it is always taken whole.
_MAX_REQUEST = 16 * 1024
_now = time.monotonic
_wall = time.time
cplane.configure(RequestHead)  # the class cplane.request makes its heads of
# The C parse (and the C log batch, worker.py), unless the environment asks for the Python-only plane.
C_PLANE = os.environ.get("DYNOD_ROUTER_PLANE") != "python"
_c_request = cplane.request if C_PLANE else None
_c_relay = cplane.relay_response if C_PLANE else None


class _Exchange:
    """One request the plane has sent to a dyno, until its response is relayed."""

    __slots__ = ("client", "head", "app", "dyno", "conn", "request_id", "start", "start_wall", "service_start",
                 "up", "stale_ok", "rhead", "nbytes", "keep", "readable", "ended", "got_any", "unsent", "dyno_fd",
                 "client_fd")

    def __init__(self, client: _Client, head: RequestHead, app: AppRoute, dyno: DynoRoute, conn: DynoConn,
                 request_id: bytes, start: float, start_wall: float, up: bytes, stale_ok: bool) -> None:
        # The plane sends on a connection it already holds: service starts when the request does.
        self.client = client
        self.head = head
        self.app = app
        self.dyno = dyno
        self.conn = conn
        self.request_id = request_id
        self.start = start
        self.start_wall = start_wall
        self.service_start = start
        self.up = up
        self.stale_ok = stale_ok
        self.rhead: ResponseHead | None = None
        self.nbytes = 0
        self.keep = False
        self.readable = True  # the dyno's socket may hold bytes not read yet
        self.ended = False  # the dyno's end is among them (read until b"")
        self.got_any = False
        self.unsent = b""  # what of the request the dyno's socket did not take yet
        self.dyno_fd = -1  # both sockets' fds, for cplane.relay_response
        self.client_fd = -1


class PlainPlane:
    """Serves a worker's plain-HTTP connections between (and during) common requests."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.epoll = select.epoll()
        # fd -> its connection; a dyno connection's fd maps to its DynoConn while the plane has it pooled
        # (an edge then means it closed or sent what nobody asked for), to None while trio holds it.
        self._fds: dict[int, _Client | _Exchange | DynoConn | None] = {}
        self.nursery: trio.Nursery | None = None  # the worker's, for what goes to trio: set before adopt()
        self.requests = 0  # started here (the rest of a worker's requests are trio's from the start)
        self.requests_c = 0  # requests cplane.request parsed (those then handed to trio included)
        self.responses_c = 0  # responses cplane.response rewrote (the rest went through parse.py)

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Drain the epoll for the worker's life."""
        epoll = self.epoll
        fds = self._fds
        try:
            while True:
                ready = epoll.poll(0, _BATCH)
                if not ready:
                    await wait_readable(epoll.fileno())
                    continue
                for fd, mask in ready:
                    owner = fds.get(fd)
                    if owner is None:
                        continue
                    try:
                        if type(owner) is _Exchange:
                            self._dyno_event(owner, mask)
                        elif type(owner) is DynoConn:
                            if mask & ~_OUT:
                                owner.quiet = False  # peeked before its next use
                        else:
                            self._client_event(owner, mask)
                    except Exception:  # a bug must cost one connection, never the worker
                        traceback.print_exc(file=sys.stderr)
                        client = owner.client if type(owner) is _Exchange else owner
                        if type(client) is _Client and client.in_plane:
                            self._close(client)
                # One pass of trio's scheduler per batch: accepts, deadlines, log batches and the
                # connections trio serves must not wait for a quiet moment.
                await trio.lowlevel.checkpoint()
        finally:
            for client in [c for c in self.proxy._clients if c.in_plane]:
                self._close(client)
            epoll.close()

    def adopt(self, client: _Client, reader: RequestReader) -> None:
        """Take a client connection between requests (new, or handed back by trio)."""
        client.in_plane = True
        client.reader = reader
        client.readable = True
        client.ended = False
        client.received = False
        client.exchange = None
        fd = client.pipe.sock.fileno()
        if self._fds.get(fd) is not client:
            self._register(fd, client)
        self._next_request(client)

    def _register(self, fd: int, owner: _Client | _Exchange | None) -> None:
        try:
            self.epoll.register(fd, _MASK)
        except FileExistsError:  # registered while a trio task held it: edge-triggered, nothing lost
            pass
        self._fds[fd] = owner

    def _to_trio(self, client: _Client, resume: Resume | None) -> None:
        client.in_plane = False
        assert self.nursery is not None and client.reader is not None
        self.nursery.start_soon(self.proxy.resume, client, client.reader, resume)

    # ------------------------------------------------------------------ client side
    def _client_event(self, client: _Client, mask: int) -> None:
        if not client.in_plane:
            return
        if mask & ~_OUT:  # noted first: a flush that cannot finish must not lose this edge
            client.readable = True
            if mask & _ENDED:
                client.ended = True
        if mask & _OUT and client.out:
            if not self._flush(client):
                return
        if client.exchange is None:
            self._next_request(client)

    def _flush(self, client: _Client) -> bool:
        """Write what the client's socket did not take; True when all is written (then go on)."""
        try:
            sent = client.pipe.sock.send(client.out)
        except BlockingIOError:
            return False
        except OSError:
            self._client_gone(client)
            return False
        client.out = client.out[sent:]
        x = client.exchange
        if x is not None and client.phase == _STREAMING:
            client.deadline = _now() + self.proxy.options.idle_timeout  # a slow client is not an idle dyno
        if client.out:
            return False
        if client.close_after:
            self._close(client)
            return False
        if x is not None and x.readable:
            self._dyno_event(x, _IN)  # the dyno's bytes waited for room at the client's end
        return True

    def _send(self, client: _Client, data: bytes) -> bool:
        """Send to the client (the rest later, on its EPOLLOUT); False when the client is gone."""
        if client.out:
            client.out += data
            return True
        try:
            sent = client.pipe.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        if sent < len(data):
            client.out = data[sent:]
        return True

    def _next_request(self, client: _Client) -> None:
        """Read and start the client's next request, or wait for it."""
        if not client.in_plane or client.out:
            return  # closed meanwhile; or the last answer goes out first, as trio's send_all would have it
        proxy = self.proxy
        reader = client.reader
        assert reader is not None
        events = reader.events
        opts = proxy.options
        if not events:
            if proxy._draining:
                self._close(client)
                return
            if client.phase != _HEAD:
                client.phase = _KEEPALIVE
                client.deadline = _now() + opts.keepalive_timeout
            if not client.received:
                proxy._idle[client] = None
            sock = client.pipe.sock
            while not events:
                if not client.readable:
                    return
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    client.readable = False
                    return
                except OSError:
                    self._close(client)
                    return
                if not data:
                    self._close(client)
                    return
                if len(data) < RECV_SIZE and not client.ended:
                    client.readable = False  # a short read emptied the socket: the next edge says more
                if not client.received:
                    client.received = True
                    proxy._idle.pop(client, None)
                # Only a read that starts a request: bytes of one partly parsed are the reader's.
                if _c_request is not None and reader._between:
                    start_wall = _wall()
                    fast = _c_request(data, client.ip_bytes, client.proto_bytes, client.port_bytes,
                                      int(start_wall * 1000))
                    if fast is not None:  # whole: no head deadline to arm, the request starts now
                        client.received = False
                        client.phase = _BUSY
                        client.deadline = _INF
                        self._start_whole(client, reader, data, fast, start_wall)
                        return
                if client.phase == _KEEPALIVE:
                    client.wait_for(_HEAD, opts.header_timeout)
                try:
                    reader.feed(data)
                except ProtocolError as exc:
                    self._reply_and_close(client, codes.bad_request_response(exc.status))
                    return
        client.received = False
        client.phase = _BUSY
        client.deadline = _INF
        head = events[0]
        if type(head) is not RequestHead:
            self._close(client)  # bytes after a refused upgrade: nothing more can be parsed here
            return
        self._start(client, reader, head)

    def _start(self, client: _Client, reader: RequestReader, head: RequestHead) -> None:
        proxy = self.proxy
        events = reader.events
        app = proxy.table.lookup(head.host)
        # Only a body that came whole goes through the plane (it goes in one write with the head).
        if head.framing == NO_BODY:
            whole = True
        elif head.framing == LENGTH and END in events:
            whole = sum(len(ev.data) for ev in events if type(ev) is Body) <= _MAX_REQUEST
        else:
            whole = False
        if app is None or not whole or head.upgrade or app.challenges or app.maintenance or not app.dynos:
            self._to_trio(client, None)
            return
        pool = proxy.pool
        dyno = choose_dyno(app, pool.in_flight, proxy.rng)
        idempotent = head.framing == NO_BODY and head.method in _IDEMPOTENT
        conn = pool.take_idle(dyno.addr, idempotent) if dyno is not None else None
        if conn is None:
            self._to_trio(client, None)  # a connect (and its H19/H21 retries) is trio's
            return
        events.popleft()
        start_wall = time.time()
        request_id = pick_request_id(head)
        up = upstream_head(head, client_ip=client.ip_bytes, proto=client.proto_bytes, port=client.port_bytes,
                           request_id=request_id, start_ms=int(start_wall * 1000))
        out = [up]
        _take_body(events, False, out, _SENT)  # the body goes whole with the head: nothing to tell a relay
        assert dyno is not None
        self._send_request(client, head, app, dyno, conn, idempotent, request_id, start_wall, up,
                           b"".join(out) if len(out) > 1 else up)

    def _start_whole(self, client: _Client, reader: RequestReader, data: bytes,
                     fast: tuple[RequestHead, bytes, bytes, bytes], start_wall: float) -> None:
        """_start for a request C parsed whole from ``data`` (head, dyno's head, body, request id)."""
        head, up, body, request_id = fast
        self.requests_c += 1
        proxy = self.proxy
        app = proxy.table.lookup(head.host)
        if app is None or app.challenges or app.maintenance or not app.dynos:
            self._to_trio_with(client, reader, data)
            return
        pool = proxy.pool
        dyno = choose_dyno(app, pool.in_flight, proxy.rng)
        idempotent = head.framing == NO_BODY and head.method in _IDEMPOTENT
        conn = pool.take_idle(dyno.addr, idempotent) if dyno is not None else None
        if conn is None:
            self._to_trio_with(client, reader, data)
            return
        assert dyno is not None
        self._send_request(client, head, app, dyno, conn, idempotent, request_id, start_wall, up,
                           up + body if body else up)

    def _to_trio_with(self, client: _Client, reader: RequestReader, data: bytes) -> None:
        """Hand trio a request C parsed: its reader gets the bytes, as if C had never seen them."""
        try:
            reader.feed(data)
        except ProtocolError as exc:  # C takes only what the reader takes: this would be a C bug
            self._reply_and_close(client, codes.bad_request_response(exc.status))
            return
        self._to_trio(client, None)

    def _send_request(self, client: _Client, head: RequestHead, app: AppRoute, dyno: DynoRoute, conn: DynoConn,
                      idempotent: bool, request_id: bytes, start_wall: float, up: bytes, data: bytes) -> None:
        """Send the request to the dyno on the idle pooled ``conn`` and wait for its answer's edge."""
        proxy = self.proxy
        pool = proxy.pool
        proxy.requests += 1
        self.requests += 1
        start = _now()
        resendable = conn.reused and head.framing == NO_BODY
        x = _Exchange(client, head, app, dyno, conn, request_id, start, start_wall, up, conn.reused and idempotent)
        addr = dyno.addr
        pool.in_flight[addr] = pool.in_flight.get(addr, 0) + 1
        client.exchange = x
        fd = conn.pipe.sock.fileno()
        x.dyno_fd = fd
        x.client_fd = client.pipe.sock.fileno()
        if conn.in_plane:
            self._fds[fd] = x
        else:
            conn.in_plane = True
            self._register(fd, x)
        client.phase = _FIRST_BYTE
        client.deadline = start + proxy.options.request_timeout  # one clock read for the request's start
        try:
            sent = conn.pipe.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._end_exchange(x, pool_it=False)
            client.exchange = None
            if resendable:
                self._to_trio(client, Resume(head, app, dyno, None, 0.0, request_id, start, start_wall,
                                             x.service_start, up))
                return
            self._fail(x, codes.H13, sent=False)
            return
        if sent < len(data):
            x.unsent = data[sent:]  # the rest on the dyno socket's EPOLLOUT
        x.readable = False  # the answer cannot be here yet: wait for its edge

    # ------------------------------------------------------------------ dyno side
    def _dyno_event(self, x: _Exchange, mask: int) -> None:
        if x.unsent and mask & _OUT:
            try:
                sent = x.conn.pipe.sock.send(x.unsent)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._end_exchange(x, pool_it=False)
                self._fail(x, codes.H13, sent=False)
                return
            x.unsent = x.unsent[sent:]
        if not mask & ~_OUT:
            return
        client = x.client
        x.readable = True
        if mask & _ENDED:
            x.ended = True
        if client.out:
            return  # a slow client: the dyno's bytes wait in its socket (backpressure)
        conn = x.conn
        sock = conn.pipe.sock
        rr = conn.reader
        revents = rr.events
        while x.readable:
            if not x.got_any and _c_relay is not None:
                # The first read, in C with its rewrite and its send when the response is whole (the
                # client has nothing waiting: checked above); else the bytes go on as the recv's.
                head = x.head
                fast = _c_relay(x.dyno_fd, x.client_fd, head.method == b"HEAD", head.keep_alive,
                                head.http_version == "1.0")
                if fast is None:
                    x.readable = False
                    return
                if type(fast) is tuple:
                    status, x.nbytes, keep_alive, unsent, nread = fast
                    if nread < RECV_SIZE and not x.ended:
                        x.readable = False
                    x.got_any = True
                    x.keep = head.keep_alive
                    self.responses_c += 1
                    if unsent is None:  # the client is gone
                        self._end_exchange(x, pool_it=False)
                        self._fail(x, codes.H27, sent=True)
                        return
                    if unsent:
                        client.out = unsent  # the rest on the client's EPOLLOUT
                    self._finish(x, status, keep_alive)
                    return
                data = fast
            else:
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    x.readable = False
                    return
                except OSError:
                    data = b""
            if not data:
                self._dyno_ended(x)
                return
            if len(data) < RECV_SIZE and not x.ended:
                x.readable = False
            if not x.got_any:
                # Started only now: an answer C relays whole never needs parse.py's reader (trio's
                # path starts it itself before it sends on a pooled connection).
                rr.start(head_only=x.head.method == b"HEAD")
                x.got_any = True
            try:
                rr.feed(data)
            except ProtocolError:
                self._end_exchange(x, pool_it=False)
                self._fail(x, codes.H13 if x.rhead is None else codes.H18, sent=x.rhead is not None)
                return
            if x.rhead is None:
                if not revents:
                    continue
                rhead = revents[0]
                if type(rhead) is not ResponseHead:
                    self._end_exchange(x, pool_it=False)
                    self._fail(x, codes.H13, sent=False)
                    return
                if not self._plain_response(rhead, revents):
                    self._handover(x)
                    return
                revents.popleft()
                x.rhead = rhead
                head = x.head
                x.keep = head.keep_alive
                out = [client_head(rhead, framing=rhead.framing, keep_alive=x.keep,
                                   client_version=head.http_version)]
                client.wait_for(_STREAMING, self.proxy.options.idle_timeout)
            else:
                out = []
                client.deadline = _now() + self.proxy.options.idle_timeout
            done = False
            while revents:
                ev = revents.popleft()
                if type(ev) is Body:
                    x.nbytes += len(ev.data)
                    out.append(ev.data)
                elif ev is END:
                    done = True
                    break
            if out and not self._send(client, b"".join(out) if len(out) > 1 else out[0]):
                self._end_exchange(x, pool_it=False)
                self._fail(x, codes.H27, sent=True)
                return
            if done:
                self._finish(x, x.rhead.status, x.rhead.keep_alive)
                return
            if client.out:
                return  # the rest waits until the client took this

    def _plain_response(self, rhead: ResponseHead, revents: Any) -> bool:
        """Whether the plane relays this response itself: final, not 101, Content-Length framed (or
        bodiless) and short enough that a splice would not pay."""
        if rhead.status < 200 or rhead.status == 101:
            return False
        framing = rhead.framing
        if framing == NO_BODY:
            return True
        if framing != LENGTH:
            return False
        if END in revents:
            return True
        length = _content_length(rhead)
        return length is not None and length - sum(len(ev.data) for ev in revents if type(ev) is Body) < _SPLICE_MIN

    def _handover(self, x: _Exchange) -> None:
        """Give trio the exchange as it stands: the response head is parsed, nothing sent to the client."""
        self._end_exchange(x, pool_it=None)
        client = x.client
        client.exchange = None
        self._to_trio(client, Resume(x.head, x.app, x.dyno, x.conn, 0.0, x.request_id, x.start, x.start_wall,
                                     x.service_start, x.up))

    def _dyno_ended(self, x: _Exchange) -> None:
        """The dyno closed or reset the connection before the response's end."""
        self._end_exchange(x, pool_it=False)
        if x.rhead is None and not x.got_any:
            if x.stale_ok:
                # A pooled connection closed under a bodiless idempotent request: resend on a fresh one.
                client = x.client
                client.exchange = None
                self._to_trio(client, Resume(x.head, x.app, x.dyno, None, 0.0, x.request_id, x.start,
                                             x.start_wall, x.service_start, x.up))
                return
            self._fail(x, codes.H13, sent=False)
            return
        self._fail(x, codes.H18, sent=x.rhead is not None)

    def _end_exchange(self, x: _Exchange, pool_it: bool | None) -> None:
        """The plane is done with the dyno connection: pool it, close it, or (None) leave it to trio."""
        conn = x.conn
        pool = self.proxy.pool
        pool.in_flight[conn.addr] -= 1
        if pool_it is False:
            self._fds.pop(conn.pipe.sock.fileno(), None)
            conn.close()
            return
        fd = conn.pipe.sock.fileno()
        if pool_it:
            # Quiet when its last read emptied it: any edge from now on is news (take_idle peeks then).
            conn.quiet = not x.readable
            self._fds[fd] = conn
            pool.put(conn)
        else:
            self._fds[fd] = None

    def _finish(self, x: _Exchange, status: int, dyno_keep_alive: bool) -> None:
        client = x.client
        client.phase = _BUSY
        client.deadline = _INF
        self._end_exchange(x, pool_it=dyno_keep_alive and not x.unsent)
        client.exchange = None
        self.proxy._log(x.app.name, x.head, client, x.request_id, x.dyno, 0.0, _now() - x.service_start,
                        status, x.nbytes, None)
        if not x.keep:
            if client.out:
                client.close_after = True
            else:
                self._close(client)
            return
        self._next_request(client)

    # ------------------------------------------------------------------ failures and ends
    def _fail(self, x: _Exchange, code: RouterCode, *, sent: bool) -> None:
        """What trio's proxy does with a _Failure after a dyno was chosen: count, log, answer or close."""
        proxy = self.proxy
        client = x.client
        client.exchange = None
        proxy.codes[code.code] += 1
        proxy._log(x.app.name, x.head, client, x.request_id, x.dyno, 0.0, _now() - x.start, code.status, 0, code)
        if sent or code is codes.H27:
            self._close(client)
            return
        assert client.reader is not None
        keep = x.head.keep_alive and _drop_body(client.reader)
        page = codes.error_response(code, keep_alive=keep, head_only=x.head.method == b"HEAD")
        if not self._send(client, page):
            self._close(client)
        elif not keep:
            if client.out:
                client.close_after = True
            else:
                self._close(client)
        else:
            client.phase = _BUSY
            client.deadline = _INF
            self._next_request(client)

    def _client_gone(self, client: _Client) -> None:
        x = client.exchange
        if x is not None:
            self._end_exchange(x, pool_it=False)
            self._fail(x, codes.H27, sent=True)
        else:
            self._close(client)

    def _reply_and_close(self, client: _Client, reply: bytes) -> None:
        try:
            client.pipe.sock.send(reply)  # one try, as a short answer fits an empty socket buffer
        except OSError:
            pass
        self._close(client)

    def expire(self, client: _Client) -> None:
        """The client's deadline passed (or the worker drains or evicts it): what trio's cancel does."""
        x = client.exchange
        expired = client.expired
        client.expired = _BUSY
        if x is not None:
            self._end_exchange(x, pool_it=False)
            client.exchange = None
            if expired == _FIRST_BYTE or expired == _STREAMING:
                code = codes.H12 if expired == _FIRST_BYTE else codes.H15
                self.proxy.codes[code.code] += 1
                self.proxy._log(x.app.name, x.head, client, x.request_id, x.dyno, 0.0, _now() - x.start,
                                code.status, 0, code)
                if expired == _FIRST_BYTE and not client.out:
                    self._reply_and_close(client, codes.error_response(code, keep_alive=False,
                                                                       head_only=x.head.method == b"HEAD"))
                    return
        elif expired == _HEAD and client.received and not client.out:
            self._reply_and_close(client, codes.bad_request_response(408))  # a head that never ends
            return
        self._close(client)

    def _close(self, client: _Client) -> None:
        if not client.in_plane:
            return
        client.in_plane = False
        x = client.exchange
        if x is not None:
            client.exchange = None
            self._end_exchange(x, pool_it=False)
        self._fds.pop(client.pipe.sock.fileno(), None)
        self.proxy.forget(client)
