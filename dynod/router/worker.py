"""A router worker process: accepts on the listening sockets it inherited and proxies requests.

Started by the router's parent (supervisor) with its sockets and a socketpair end as file
descriptors; it never binds anything itself. Route snapshots and certificates come down the
socketpair, log lines go up it in batches (one write per 20 ms, not one per request).
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import signal
import socket
import sys
import time

import trio

from ..errors import UserError
from . import codes
from .logline import AccessRecord, access_message
from .netio import SocketPipe, StreamPipe, wait_readable
from .options import RouterOptions
from .parse import RequestReader
from .plane import C_PLANE, PlainPlane, cplane
from .proxy import Proxy
from .routes import RouteTable
from .shares import HOLD_BACK, HOLD_OFF, HOLD_STEP, HOLDS_BEFORE_OFF, ConnectionShares
from .snapshots import RoutesSnapshot, StoredCertsSnapshot
from .tls import CertStore, ensure_default_cert
from .wire import MessageReader, encode

_FLUSH_EVERY = 0.02
_WAKE_EVERY = 0.5
_MAX_SHEDDING = 64  # connections being told "503, over the limit" at once


class LogBatcher:
    """Log lines waiting to go up to the parent, bounded: beyond ``limit`` new lines are dropped.

    A request leaves its log line as a tuple; the line is formatted when its batch is sent, off the
    request's path and one batch at a time.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: list[AccessRecord | bytes] = []  # records, and control messages already encoded
        self.dropped = 0

        self.arrived = trio.Event()

    def emit(self, record: AccessRecord) -> None:
        if len(self.pending) >= self.limit:
            self.dropped += 1
            return
        self.pending.append(record)
        self.arrived.set()

    def send_nowait(self, message: dict[str, object]) -> None:
        self.pending.append(encode(message))
        self.arrived.set()

    def take_batch(self) -> bytes:
        """Everything pending, as the bytes for the parent; empties the queue."""
        pending, self.pending = self.pending, []
        if C_PLANE:  # the common line formatted in C, byte for byte access_message's (test_router_cplane)
            return cplane.access_batch(pending, access_message)
        return b"".join(item if type(item) is bytes else access_message(*item) for item in pending)


class _Hold:
    """One listening socket's hold: how long this worker has left a waiting connect to its peers."""

    def __init__(self, lsock: socket.socket) -> None:
        self.lsock = lsock
        self.waiting = select.poll()  # is a connect still queued? (poll, not select: any fd number)
        self.waiting.register(lsock, select.POLLIN)
        self.since = -1.0  # when the current hold began; -1 when none is on
        self.again_at = 0.0  # after holds its peers let pass, none until then (one may be hung)
        self.failed = 0  # holds in a row no peer ended; a peer busy for a moment fails one now and then

    async def left_to_peers(self) -> bool:
        """Wait for a connect; True if it was left to the peers a moment (look again), False if this
        worker is to take it: the hold ran out, or holds are off for a while."""
        await wait_readable(self.lsock)
        now = trio.current_time()
        if now < self.again_at:
            return False
        if self.since < 0:
            self.since = now
        if now - self.since < HOLD_BACK:
            await trio.sleep(HOLD_STEP)
            if not self.waiting.poll(0):
                self.since = -1.0  # a peer took it
                self.failed = 0
            return True
        self.failed += 1
        if self.failed >= HOLDS_BEFORE_OFF:  # no peer takes any: take the queue a while
            self.again_at = now + HOLD_OFF
            self.failed = 0
        return False


class Worker:
    def __init__(self, options: RouterOptions, channel: socket.socket,
                 listeners: list[tuple[str, socket.socket, int]], shares: ConnectionShares | None = None) -> None:
        self.options = options
        self.channel = SocketPipe(channel)
        self.listeners = listeners
        self.logs = LogBatcher(options.log_buffer)
        self.proxy = Proxy(options, self.logs.emit)
        self.proxy.wake_app = self._ask_to_wake
        self.proxy.shares = shares
        if shares is not None:
            shares.publish(0)
        self.plane = PlainPlane(self.proxy)
        self.proxy.plane = self.plane
        self._wake_asked: dict[str, float] = {}  # app -> when this worker last asked dynod to wake it
        self.certs: CertStore | None = None
        self.shedding = 0
        if any(kind == "https" for kind, _, _ in listeners):
            default = ensure_default_cert(options.state_dir / "certs", options.base_domain)
            self.certs = CertStore(default)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_logs)
            async with trio.open_nursery() as serving:
                accepting = trio.CancelScope()
                self.plane.nursery = serving
                serving.start_soon(self.plane.run)
                serving.start_soon(self._accept_all, serving, accepting)
                nursery.start_soon(self.proxy.watch_deadlines)
                self.logs.send_nowait({"type": "ready", "pid": os.getpid()})
                await self._follow_parent()
                # Stop: no new connections; idle ones close now, busy ones get drain_timeout.
                accepting.cancel()
                self.proxy.draining()
                with trio.move_on_after(self.options.drain_timeout):
                    while self.proxy.connections:
                        await trio.sleep(0.05)
                serving.cancel_scope.cancel()
            self.proxy.pool.close_all()
            await self._flush_once()
            nursery.cancel_scope.cancel()

    def _ask_to_wake(self, app: str) -> None:
        """Ask dynod (through the parent, in order with the log lines) to wake a sleeping app; every
        held request asks, so a burst is one message per half second."""
        now = time.monotonic()
        if now - self._wake_asked.get(app, -_WAKE_EVERY) >= _WAKE_EVERY:
            self._wake_asked[app] = now
            self.logs.send_nowait({"type": "wake", "app": app})

    async def _accept_all(self, serving: trio.Nursery, accepting: trio.CancelScope) -> None:
        with accepting:
            async with trio.open_nursery() as loops:
                for kind, sock, port in self.listeners:
                    loops.start_soon(self._accept, serving, kind, sock, port)

    async def _accept(self, serving: trio.Nursery, kind: str, lsock: socket.socket, port: int) -> None:
        limit = self.options.max_connections
        proxy = self.proxy
        shares = proxy.shares
        hold = _Hold(lsock)
        while True:
            # Over its share, or at the limit while a peer has room: a peer should take the connect.
            if shares is not None and shares.over_share(proxy.held(), limit) and await hold.left_to_peers():
                continue
            try:
                sock, addr = lsock.accept()
            except BlockingIOError:
                hold.since = -1.0
                await wait_readable(lsock)
                continue
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                print(f"router worker {os.getpid()}: accept failed: {exc}", file=sys.stderr)
                await trio.sleep(0.1)
                continue
            hold.since = -1.0
            sock.setblocking(False)
            if proxy.held() >= limit and not proxy.evict_idle():
                proxy.codes["overloaded"] += 1
                if self.shedding < _MAX_SHEDDING:
                    serving.start_soon(self._shed, sock)
                else:
                    sock.close()  # a flood: not even a 503 is worth more tasks
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if kind == "https":
                # Counted from the accept, not from the handshake's end (the task starts only when
                # this loop yields): a burst of TLS connects must spread over the workers too.
                proxy.handshake_started()
                serving.start_soon(self._serve_tls, sock, addr[0], port)
            else:
                self.plane.adopt(proxy.accept(SocketPipe(sock), addr[0], "http", port), RequestReader())

    async def _shed(self, sock: socket.socket) -> None:
        """Tell one client over the limit "503" and close without a reset (which would hide it)."""
        self.shedding += 1
        pipe = SocketPipe(sock)
        try:
            with trio.move_on_after(1.0):
                await pipe.send_all(codes.OVERLOADED)
                sock.shutdown(socket.SHUT_WR)
                while await pipe.recv():  # read what it sent, so close() sends FIN, not RST
                    pass
        except OSError:
            pass
        finally:
            pipe.close()
            self.shedding -= 1

    async def _serve_tls(self, sock: socket.socket, ip: str, port: int) -> None:
        try:  # counted in by _accept
            handshaken = await self._handshake(sock)
        finally:
            self.proxy.handshake_ended()
        if handshaken is not None:
            await self.proxy.serve(handshaken, ip, "https", port)

    async def _handshake(self, sock: socket.socket) -> StreamPipe | None:
        assert self.certs is not None
        stream = trio.SSLStream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)),
                                self.certs.context, server_side=True, https_compatible=True)
        pipe = StreamPipe(stream)
        with trio.move_on_after(self.options.header_timeout) as handshake:
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError:
                pipe.close()
                return None
        if handshake.cancelled_caught:
            pipe.close()
            return None
        return pipe

    async def _follow_parent(self) -> None:
        """Apply the parent's messages until it says stop or goes away."""
        messages = MessageReader(self.channel.recv)
        while (message := await messages.next()) is not None:
            kind = message["type"]
            if kind == "routes":
                snapshot = RoutesSnapshot.decode(message)
                self.proxy.set_routes(RouteTable(snapshot.apps, self.options.base_domain))
            elif kind == "certs" and self.certs is not None:
                self.certs.update(StoredCertsSnapshot.decode(message).certs)
            elif kind == "stats":
                stats = self.proxy.statistics()
                stats.update(type="stats", pid=os.getpid(), log_dropped=self.logs.dropped)
                self.logs.send_nowait(stats)
            elif kind == "stop":
                return

    async def _flush_logs(self) -> None:
        while True:
            await self.logs.arrived.wait()
            await trio.sleep(_FLUSH_EVERY)  # gather what else comes: one write per batch
            self.logs.arrived = trio.Event()
            await self._flush_once()

    async def _flush_once(self) -> None:
        if self.logs.pending:
            data = self.logs.take_batch()
            try:
                await self.channel.send_all(data)
            except OSError:
                pass  # the parent is gone; _follow_parent sees the EOF and stops this worker


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynod.router.worker")
    parser.add_argument("--options", required=True)
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--listen", action="append", default=[], help="KIND:FD:PORT")
    parser.add_argument("--shares", default=None, help="FD:WORKERS:SLOT, the workers' shared counts")
    args = parser.parse_args(argv)
    options = RouterOptions.from_json(args.options)
    # The parent decides when a worker stops (it sends "stop" or closes the channel); a Ctrl-C meant
    # for the parent's terminal must not kill workers mid-request.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _raise_fd_limit()
    channel = socket.socket(fileno=args.channel)
    channel.setblocking(False)
    listeners = []
    for spec in args.listen:
        kind, fd, port = spec.split(":")
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        listeners.append((kind, sock, int(port)))
    shares = None
    if args.shares:
        fd, workers, slot = (int(n) for n in args.shares.split(":"))
        shares = ConnectionShares(fd, workers, slot)
        os.close(fd)  # the mapping stays
    try:
        trio.run(Worker(options, channel, listeners, shares).run)
    except UserError as exc:
        print(f"router worker: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
