"""Newline-delimited JSON, the router's control framing (dynod <-> router, router <-> workers).

``encode``/``decode`` are the framing of one message; ``ControlLineSplitter`` cuts a byte stream into
message lines; ``MessageReader`` (trio) and ``BlockingMessageReader`` (plain sockets, for tests and
benches) are the one receive loop every reader of a control stream uses.
"""

from __future__ import annotations

import json
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..errors import UserError

MAX_MESSAGE = 16 * 1024 * 1024  # a full routes snapshot or cert set of a big host fits many times over
_RECEIVE_SIZE = 65536


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One message; UserError for anything but a JSON object with a string "type"."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise UserError("Control message is not JSON: send one JSON object per line.") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise UserError('Control message must be a JSON object with a "type".')
    return message


class ControlLineSplitter:
    """Control-stream bytes in, complete message lines out (without the newline; blank lines skipped)."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes; UserError (and the partial line dropped) beyond MAX_MESSAGE."""
        if b"\n" not in data:
            self._partial += data
            if len(self._partial) > MAX_MESSAGE:
                self._partial = b""
                raise UserError(f"Control message longer than {MAX_MESSAGE} bytes.")
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return [line for line in lines if line.strip()]


class MessageReader:
    """The messages of one trio-side control stream, in order.

    ``receive`` returns the next bytes, b"" at the end; a reset or broken stream counts as the end too,
    since every reader treats a vanished peer the same way (it stops reading).
    """

    __slots__ = ("_receive", "_splitter", "_lines")

    def __init__(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        self._receive = receive
        self._splitter = ControlLineSplitter()
        self._lines: deque[bytes] = deque()

    async def next_line(self) -> bytes | None:
        """The next message line, undecoded (so a relay can pass it on as it is); None at the end.

        UserError when a message is longer than MAX_MESSAGE; the reader stays usable after it.
        """
        if not self._lines and not await self._fill():
            return None
        return self._lines.popleft()

    async def next_lines(self) -> list[bytes] | None:
        """Every complete message line at hand (at least one), undecoded; None at the end.

        For a relay on a busy stream (a worker's log lines): one call per read, not one per line.
        """
        if not self._lines and not await self._fill():
            return None
        lines = list(self._lines)
        self._lines.clear()
        return lines

    async def _fill(self) -> bool:
        """Read until at least one line is complete; False at the end."""
        while not self._lines:
            try:
                data = await self._receive()
            except (OSError, trio.BrokenResourceError):
                data = b""
            if not data:
                return False
            self._lines.extend(self._splitter.feed(data))
        return True

    async def next(self) -> dict[str, Any] | None:
        """The next message decoded; None at the end, UserError for a malformed one."""
        line = await self.next_line()
        return None if line is None else decode(line)


class BlockingMessageReader:
    """The messages of a blocking socket's control stream, for code that runs without an event loop."""

    __slots__ = ("_sock", "_splitter")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._splitter = ControlLineSplitter()

    def read(self, timeout: float) -> list[dict[str, Any]]:
        """The messages one receive brings within ``timeout`` ([] when none came); EOFError at the end."""
        self._sock.settimeout(max(timeout, 0.001))
        try:
            data = self._sock.recv(_RECEIVE_SIZE)
        except TimeoutError:
            return []
        if not data:
            raise EOFError("the control connection closed")
        return [decode(line) for line in self._splitter.feed(data)]
