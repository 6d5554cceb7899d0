"""The byte pipes the proxy reads and writes: a plain socket fast path and a trio stream (TLS).

For plain TCP the router calls the non-blocking socket first and waits on trio only when the kernel
says EAGAIN: trio's own socket methods yield to the scheduler on every call, which costs more than the
syscall itself at proxy rates. A pipe that never had to wait yields every few calls anyway, so one
busy connection cannot starve the others or miss its cancellation.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Callable

import trio

RECV_SIZE = 65536
_YIELD_EVERY = 8

wait_readable = trio.lowlevel.wait_readable
wait_writable = trio.lowlevel.wait_writable
checkpoint = trio.lowlevel.checkpoint


class ConnectTimeout(Exception):
    """The dyno did not accept within the connect timeout (H19)."""


class ConnectRefused(Exception):
    """The dyno refused or reset the connection attempt (H21)."""


class SocketPipe:
    """A connected non-blocking stdlib socket."""

    __slots__ = ("sock", "_ready_streak")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._ready_streak = 0

    async def recv(self) -> bytes:
        """The next bytes; b"" at end of stream. Raises OSError when the peer reset."""
        sock = self.sock
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                self._ready_streak = 0
                await wait_readable(sock)
                continue
            self._ready_streak += 1
            if self._ready_streak >= _YIELD_EVERY:
                self._ready_streak = 0
                await checkpoint()
            return data

    async def recv_later(self) -> bytes:
        """Like recv, for bytes that cannot be here yet (the peer has only just been written to).

        Trying first would cost a failed syscall and a BlockingIOError per request: wait, then read.
        """
        sock = self.sock
        while True:
            await wait_readable(sock)
            try:
                return sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue

    async def send_all(self, data: bytes | memoryview) -> None:
        sock = self.sock
        view: memoryview | None = None
        while True:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                await wait_writable(sock)
                continue
            if sent == len(data):
                return
            if view is None:
                view = memoryview(data)
                data = view
            data = data[sent:]

    def close(self) -> None:
        # Any task still waiting on this fd must be woken before the fd number can be reused.
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


class StreamPipe:
    """A trio stream (the TLS side): same surface as SocketPipe."""

    __slots__ = ("stream",)

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def recv(self) -> bytes:
        try:
            return await self.stream.receive_some(RECV_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(errno.ECONNRESET, "connection lost") from exc

    recv_later = recv  # a TLS record may already be buffered: no cheaper order to read in

    async def send_all(self, data: bytes | memoryview) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(errno.ECONNRESET, "connection lost") from exc

    def close(self) -> None:
        # Closing TLS politely would wait on the peer; the router must never wait on a vanished client.
        transport = getattr(self.stream, "transport_stream", None)
        sock_stream = transport if transport is not None else self.stream
        if isinstance(sock_stream, trio.SocketStream):
            sock = sock_stream.socket
            if sock.fileno() >= 0:
                trio.lowlevel.notify_closing(sock)
                sock.close()


Pipe = SocketPipe | StreamPipe

_SPLICE = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_SPLICE_PIPE_SIZE = 256 * 1024  # per round trip through the kernel pipe; the default is 64 KiB


class SpliceSourceEnded(Exception):
    """The source closed or reset before the bytes asked for came (a dyno cut its body short)."""


async def splice_exactly(src: SocketPipe, dst: SocketPipe, count: int, progress: Callable[[], None]) -> None:
    """Move ``count`` bytes from ``src`` to ``dst`` with splice(2), never copying them through Python.

    A long body costs a few syscalls per 256 KiB instead of a recv, a parse and a send per 64 KiB.
    ``progress`` is called after each piece reaches ``dst`` (the idle deadline rolls). Raises
    SpliceSourceEnded when ``src`` ends or fails first, OSError when ``dst`` fails.
    """
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _SPLICE_PIPE_SIZE)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default size works, in smaller pieces
        sfd, dfd, ssock, dsock = src.sock.fileno(), dst.sock.fileno(), src.sock, dst.sock
        unforced = 0  # pieces moved without waiting: yield now and then, as SocketPipe does
        while count:
            try:
                n = os.splice(sfd, w, min(count, _SPLICE_PIPE_SIZE), flags=_SPLICE)
            except BlockingIOError:
                unforced = 0
                await wait_readable(ssock)
                continue
            except OSError as exc:
                raise SpliceSourceEnded(str(exc)) from None
            if n == 0:
                raise SpliceSourceEnded(f"end of stream with {count} bytes to come")
            count -= n
            while n:
                try:
                    n -= os.splice(r, dfd, n, flags=_SPLICE)
                except BlockingIOError:
                    unforced = 0
                    await wait_writable(dsock)
            progress()
            unforced += 1
            if unforced >= _YIELD_EVERY:
                unforced = 0
                await checkpoint()
    finally:
        os.close(r)
        os.close(w)


async def connect_tcp(host: str, port: int, timeout: float) -> SocketPipe:
    """Open a TCP connection to a dyno; ConnectTimeout or ConnectRefused when it does not answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((host, port))
        if err == errno.EINPROGRESS:
            with trio.move_on_after(timeout):
                await wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    return SocketPipe(sock)
                raise ConnectRefused(f"{host}:{port}: {errno.errorcode.get(err, err)}")
            raise ConnectTimeout(f"{host}:{port}: no answer within {timeout:g} s")
        if err == 0:
            return SocketPipe(sock)
        raise ConnectRefused(f"{host}:{port}: {errno.errorcode.get(err, err)}")
    except BaseException:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
