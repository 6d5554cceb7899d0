"""Keep-alive connections to dynos, kept per dyno address and reused most-recent first.

Reuse halves a proxy's cost per request (no connect, no slow start). A pooled connection may have been
closed by the dyno meanwhile; a one-byte MSG_PEEK tells without waiting, before it carries a request.
A connection the plain-HTTP plane pooled is watched by its epoll instead: while no edge came since, the
peek is skipped for requests that can be resent on a fresh connection (a syscall and a raised
BlockingIOError fewer per request), as the edge of a close not yet seen only costs that resend.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

from .netio import SocketPipe, connect_tcp
from .parse import ResponseReader

Addr = tuple[str, int]
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class DynoConn:
    """One connection to a dyno, with the response reader that lives as long as it does."""

    __slots__ = ("pipe", "addr", "reader", "idle_since", "reused", "in_plane", "quiet")

    def __init__(self, pipe: SocketPipe, addr: Addr) -> None:
        self.pipe = pipe
        self.addr = addr
        self.reader = ResponseReader()
        self.idle_since = 0.0
        self.reused = False
        self.in_plane = False  # registered in the plain-HTTP plane's epoll (plane.py)
        # Pooled empty by the plane, and its epoll has reported nothing on it since (no end, no bytes).
        self.quiet = False

    def close(self) -> None:
        self.pipe.close()


class DynoPool:
    __slots__ = ("max_idle", "idle_timeout", "_idle", "in_flight", "opened", "reused")

    def __init__(self, *, max_idle: int, idle_timeout: float) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: dict[Addr, list[DynoConn]] = {}
        self.in_flight: dict[Addr, int] = {}  # requests per dyno, for power-of-two-choices
        self.opened = 0
        self.reused = 0

    def take_idle(self, addr: Addr, resendable: bool = False) -> DynoConn | None:
        """A live idle connection to ``addr``, or None. ``resendable``: the request can go again on a
        fresh connection if this one turns out closed, so a quiet connection needs no peek."""
        conns = self._idle.get(addr)
        if not conns:
            return None
        oldest_ok = time.monotonic() - self.idle_timeout
        while conns:
            conn = conns.pop()
            quiet = conn.quiet
            conn.quiet = False  # no longer idle: only the plane, pooling it again, says it is quiet
            if conn.idle_since >= oldest_ok and (quiet and resendable or _still_open(conn.pipe.sock)):
                conn.reused = True
                self.reused += 1
                return conn
            conn.close()
        return None

    async def connect(self, addr: Addr, timeout: float) -> DynoConn:
        pipe = await connect_tcp(addr[0], addr[1], timeout)
        self.opened += 1
        return DynoConn(pipe, addr)

    def put(self, conn: DynoConn) -> None:
        """Return a connection whose last response was read to its end and allows keep-alive."""
        conns = self._idle.setdefault(conn.addr, [])
        if len(conns) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)

    def retain(self, addrs: Iterable[Addr]) -> None:
        """Close idle connections to dynos no longer routed to (stopped, crashed, moved)."""
        keep = set(addrs)
        for addr in [a for a in self._idle if a not in keep]:
            for conn in self._idle.pop(addr):
                conn.close()

    def idle_count(self) -> int:
        return sum(len(c) for c in self._idle.values())

    def close_all(self) -> None:
        self.retain(())


def _still_open(sock: socket.socket) -> bool:
    try:
        sock.recv(1, _PEEK)
    except BlockingIOError:
        return True  # nothing to read: the dyno still holds it open
    except OSError:
        return False
    return False  # end of stream, or bytes no request asked for: either way unusable
