"""The router's parent process: binds, keeps N workers alive, and serves dynod's control socket.

It binds every listening socket once and hands the same sockets to each worker (no SO_REUSEPORT:
the kernel never balances between dynos; workers share the accept queue, spread their accepts by
the connection counts they share on one page (shares.py), and the dyno is chosen by the worker, at
random). It holds the last routes and certificates, so a worker that is
replaced, or a dynod that reconnects after a restart, finds the router exactly as it was.

While no dynod is attached, log lines from workers wait in a ring of ``--log-buffer`` lines
(10,000 by default); the oldest are dropped beyond it and counted (``log_dropped`` in stats).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from typing import Any

import trio

from ..errors import UserError
from .netio import SocketPipe
from .options import RouterOptions, parse_listen
from .shares import ConnectionShares
from .snapshots import CertsSnapshot, RoutesSnapshot, StoredCertsSnapshot
from .tls import ensure_default_cert, store_certs
from .wire import MessageReader, decode, encode

_RESTART_BACKOFF_MAX = 5.0
_WORKER_START_TIMEOUT = 30.0


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} router[{os.getpid()}]: {message}", file=sys.stderr,
          flush=True)


def bind_listeners(options: RouterOptions) -> list[tuple[str, socket.socket, int]]:
    """Bind every --http/--https address; UserError naming the one that failed."""
    bound = []
    try:
        for kind, addrs in (("http", options.http), ("https", options.https)):
            for addr in addrs:
                host, port = parse_listen(addr)
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError as exc:
                    sock.close()
                    raise UserError(f"Cannot listen on {addr}: {exc.strerror}; "
                                    "pick a free address or stop what holds it.") from None
                sock.listen(4096)
                bound.append((kind, sock, sock.getsockname()[1]))
    except BaseException:
        for _, sock, _ in bound:
            sock.close()
        raise
    return bound


class _Client:
    """One connection on the control socket."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.send_lock = trio.Lock()

    async def send(self, data: bytes) -> bool:
        async with self.send_lock:
            try:
                await self.stream.send_all(data)
                return True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False


class _WorkerProc:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: trio.Process | None = None
        self.channel: SocketPipe | None = None
        self.ready = trio.Event()
        self.started_at = 0.0
        self.pid = 0


class Supervisor:
    def __init__(self, options: RouterOptions, listeners: list[tuple[str, socket.socket, int]]) -> None:
        self.options = options
        self.listeners = listeners
        self.workers = [_WorkerProc(i) for i in range(options.workers)]
        # The workers' connection counts, read before each accept (shares.py); one worker needs none.
        self.shares_fd = ConnectionShares.create_fd(options.workers) if options.workers > 1 else -1
        self.shares = ConnectionShares(self.shares_fd, options.workers) if self.shares_fd >= 0 else None
        self.routes_line: bytes | None = None
        self.certs_line: bytes | None = None
        self.logs: deque[bytes] = deque()  # message lines, without their newline
        self.log_dropped = 0
        self.logs_waiting = trio.Event()
        self.attached: _Client | None = None
        self.restarts = 0
        self.stopping = False
        self._stats_replies: list[dict[str, Any]] = []
        self._stats_arrived = trio.Event()
        self._stop = trio.Event()

    # ------------------------------------------------------------------ workers
    async def _run_worker(self, w: _WorkerProc) -> None:
        """Keep worker ``w`` running: start it, and start a replacement whenever it dies."""
        backoff = 0.2
        while not self.stopping:
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            parent_end.setblocking(False)
            cmd = [sys.executable, "-m", "dynod.router.worker", "--options", self.options.to_json(),
                   "--channel", str(child_end.fileno())]
            fds = [child_end.fileno()]
            for kind, sock, port in self.listeners:
                cmd += ["--listen", f"{kind}:{sock.fileno()}:{port}"]
                fds.append(sock.fileno())
            if self.shares_fd >= 0:
                cmd += ["--shares", f"{self.shares_fd}:{len(self.workers)}:{w.index}"]
                fds.append(self.shares_fd)
            if w.ready.is_set():
                w.ready = trio.Event()  # a replacement: run() waits on the first start's event
            w.process = await trio.lowlevel.open_process(cmd, pass_fds=fds, stdin=subprocess.DEVNULL)
            child_end.close()
            w.pid = w.process.pid
            w.started_at = time.monotonic()
            w.channel = SocketPipe(parent_end)
            for line in (self.routes_line, self.certs_line):
                if line is not None:
                    await self._to_worker(w, line)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_worker, w)
                status = await w.process.wait()
                nursery.cancel_scope.cancel()
            w.channel.close()
            w.channel = None
            if self.shares is not None:
                self.shares.mark_absent(w.index)
            if self.stopping:
                return
            self.restarts += 1
            lived = time.monotonic() - w.started_at
            backoff = 0.2 if lived > 10 else min(backoff * 2, _RESTART_BACKOFF_MAX)
            _log(f"worker {w.pid} exited with status {status}; starting a replacement in {backoff:g} s")
            await trio.sleep(backoff)

    async def _read_worker(self, w: _WorkerProc) -> None:
        assert w.channel is not None
        messages = MessageReader(w.channel.recv)
        # A batch per read, not a call per line: this is the per-request path of the parent.
        while (lines := await messages.next_lines()) is not None:
            for line in lines:
                if line.startswith(b'{"type":"log"'):
                    self._buffer_log(line)  # relayed as it came: no decode on the per-request path
                    continue
                message = decode(line)
                if message["type"] == "wake":
                    self._buffer_log(line)  # dynod's to act on: it goes up with the log lines
                elif message["type"] == "ready":
                    w.ready.set()
                elif message["type"] == "stats":
                    self._stats_replies.append(message)
                    self._stats_arrived.set()

    async def _to_worker(self, w: _WorkerProc, line: bytes) -> None:
        if w.channel is not None:
            try:
                await w.channel.send_all(line)
            except OSError:
                pass  # it is dying; its replacement gets the current state at start

    async def _broadcast(self, line: bytes) -> None:
        for w in self.workers:
            await self._to_worker(w, line)

    # ------------------------------------------------------------------ logs
    def _buffer_log(self, line: bytes) -> None:
        if len(self.logs) >= self.options.log_buffer:
            self.logs.popleft()
            self.log_dropped += 1
        self.logs.append(line)
        self.logs_waiting.set()

    async def _forward_logs(self) -> None:
        while True:
            await self.logs_waiting.wait()
            self.logs_waiting = trio.Event()
            client = self.attached
            if client is None or not self.logs:
                continue
            batch = b"\n".join(self.logs) + b"\n"
            self.logs.clear()
            if not await client.send(batch):
                if self.attached is client:
                    self.attached = None
                # Those lines are lost with the connection; dynod re-attaches and gets what follows.

    # ------------------------------------------------------------------ control socket
    async def _serve_control(self, listener: trio.SocketListener) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._control_client, stream)

    async def _control_client(self, stream: trio.SocketStream) -> None:
        client = _Client(stream)
        messages = MessageReader(lambda: stream.receive_some(65536))
        try:
            while True:
                try:
                    line = await messages.next_line()
                    if line is None:
                        return
                    await self._control_message(client, line)
                except UserError as exc:  # refused (or too long): the router keeps what it had
                    await client.send(encode({"type": "error", "message": str(exc)}))
        finally:
            if self.attached is client:
                self.attached = None
            await stream.aclose()

    async def _control_message(self, client: _Client, line: bytes) -> None:
        message = decode(line)
        kind = message["type"]
        if kind == "attach":
            self.attached = client
            await client.send(encode({"type": "hello", "pid": os.getpid(), "listen": self.describe(),
                                      "workers": [w.pid for w in self.workers]}))
            self.logs_waiting.set()
        elif kind == "routes":
            self.routes_line = RoutesSnapshot.decode(message).encode()  # refused here, before any worker
            await self._broadcast(self.routes_line)
        elif kind == "certs":
            stored = store_certs(self.options.state_dir / "certs", CertsSnapshot.decode(message).certs)
            self.certs_line = StoredCertsSnapshot(tuple(stored)).encode()
            await self._broadcast(self.certs_line)
        elif kind == "stats":
            await client.send(encode(await self._statistics()))
        elif kind == "stop":
            await client.send(encode({"type": "stopping", "pid": os.getpid()}))
            self._stop.set()
        else:
            raise UserError(f"Unknown control message type {kind!r}: use attach, routes, certs, stats "
                            "or stop.")

    async def _statistics(self) -> dict[str, Any]:
        self._stats_replies = []
        live = [w for w in self.workers if w.channel is not None]
        await self._broadcast(encode({"type": "stats"}))
        with trio.move_on_after(2.0):
            while len(self._stats_replies) < len(live):
                self._stats_arrived = trio.Event()
                await self._stats_arrived.wait()
        return {"type": "stats", "pid": os.getpid(), "listen": self.describe(), "workers": self._stats_replies,
                "worker_restarts": self.restarts, "log_buffered": len(self.logs),
                "log_dropped": self.log_dropped, "attached": self.attached is not None}

    # ------------------------------------------------------------------ lifecycle
    async def run(self, control: trio.SocketListener) -> None:
        async with trio.open_nursery() as nursery:
            for w in self.workers:
                nursery.start_soon(self._run_worker, w)
            # Answer dynod only once every worker accepts, so "the router answers" means "it serves".
            with trio.move_on_after(_WORKER_START_TIMEOUT):
                for w in self.workers:
                    await w.ready.wait()
            nursery.start_soon(self._forward_logs)
            nursery.start_soon(self._watch_signals)
            nursery.start_soon(self._serve_control, control)
            _log(f"serving {', '.join(self.describe())} with {len(self.workers)} workers")
            await self._stop.wait()
            await self._shutdown()
            nursery.cancel_scope.cancel()

    def describe(self) -> list[str]:
        return [f"{kind}://{sock.getsockname()[0]}:{port}" for kind, sock, port in self.listeners]

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self._stop.set()
                return

    async def _shutdown(self) -> None:
        self.stopping = True
        await self._broadcast(encode({"type": "stop"}))
        with trio.move_on_after(self.options.drain_timeout + 2.0):
            for w in self.workers:
                if w.process is not None:
                    await w.process.wait()
        for w in self.workers:
            if w.process is not None and w.process.returncode is None:
                w.process.kill()
                await w.process.wait()
        for _, sock, _ in self.listeners:
            sock.close()
        if self.shares is not None:
            self.shares.close()
            os.close(self.shares_fd)
        _log("stopped")


async def _open_control(path: os.PathLike[str] | str) -> trio.SocketListener:
    """Bind the control socket, refusing to steal it from a router that still answers."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    else:
        raise UserError(f"A router already answers on {path}; stop it first (or use another --control).")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # root-only: whoever holds this socket controls all routing
    try:
        await sock.bind(os.fspath(path))
    except OSError as exc:
        sock.close()
        raise UserError(f"Cannot create control socket {path}: {exc.strerror}.") from None
    finally:
        os.umask(old_umask)
    sock.listen(16)
    return trio.SocketListener(sock)


def _log_to_file(path: os.PathLike[str]) -> None:
    """From here on, diagnostics go to <state-dir>/router.log: the router outlives whoever started it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


async def serve(options: RouterOptions) -> None:
    options.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    listeners = bind_listeners(options)
    try:
        if options.https:
            ensure_default_cert(options.state_dir / "certs", options.base_domain)
        control = await _open_control(options.control)
        supervisor = Supervisor(options, listeners)
        print(f"router: serving {', '.join(supervisor.describe())}; log in "
              f"{options.state_dir / 'router.log'}", file=sys.stderr, flush=True)
        _log_to_file(options.state_dir / "router.log")
        try:
            await supervisor.run(control)
        finally:
            await control.aclose()
            try:
                os.unlink(options.control)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
    finally:
        for _, sock, _ in listeners:
            sock.close()
