"""The attach protocol of ``dynoctl run``, sans I/O: frames to bytes and bytes back to frames.

After the server answers ``101 Switching Protocols`` (``Upgrade: dynod-attach``) both sides speak
frames: 1 byte type, 4 bytes big-endian payload length, payload. The server and the client share
this module and do their own I/O, so the encoding is tested once, in microseconds.

It imports only ``struct``, because ``dynoctl run`` pays for every import at startup: ``typing``
(~5 ms) is why ``Frame`` is a plain slotted class, and ``enum`` (~4 ms with what it pulls in) why
the frame types are plain ints with a name table.
"""

from __future__ import annotations

import struct

UPGRADE_TOKEN = "dynod-attach"

_HEADER = struct.Struct(">BI")
_RESIZE = struct.Struct(">HH")
_EXIT = struct.Struct(">i")

# A frame is a chunk of terminal I/O, not a file: a peer announcing more than this is broken or
# hostile, and buffering it would let it exhaust our memory.
MAX_PAYLOAD = 1024 * 1024


class FrameType:
    """The frame types on the wire (one byte each); ``FRAME_NAMES`` names them."""

    STDIN = 0  # client -> server: bytes for the dyno's stdin (or its TTY)
    STDOUT = 1  # server -> client
    STDERR = 2  # server -> client (never sent for a TTY: the terminal merges both)
    RESIZE = 3  # client -> server: rows, cols as two u16
    STDIN_EOF = 4  # client -> server: no more stdin
    EXIT = 5  # server -> client: the command's exit code, i32; the last frame
    ERROR = 6  # server -> client: a utf-8 sentence; the dyno could not be run or followed


FRAME_NAMES = {value: name for name, value in vars(FrameType).items() if name.isupper()}


class Frame:
    """One decoded frame; immutable by convention, compared by value."""

    __slots__ = ("type", "payload")

    def __init__(self, type: int, payload: bytes) -> None:
        self.type = type
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return self.type == other.type and self.payload == other.payload

    __hash__ = None  # type: ignore[assignment]  # mutable slots: not a dict key

    def __repr__(self) -> str:
        return f"Frame({FRAME_NAMES.get(self.type, self.type)}, {self.payload!r})"


class AttachProtocolError(Exception):
    """The peer sent bytes that are not valid frames; the attachment cannot go on."""


def encode_frame(type: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _HEADER.pack(type, len(payload)) + payload


def encode_data(type: int, data: bytes) -> bytes:
    """STDIN/STDOUT/STDERR frames for any amount of data, split at MAX_PAYLOAD."""
    if not data:
        return b""  # an empty data frame would read as nothing anyway; EOF has its own type
    return b"".join(encode_frame(type, data[i:i + MAX_PAYLOAD]) for i in range(0, len(data), MAX_PAYLOAD))


def encode_resize(rows: int, cols: int) -> bytes:
    return encode_frame(FrameType.RESIZE, _RESIZE.pack(_u16(rows), _u16(cols)))


def encode_exit(code: int) -> bytes:
    return encode_frame(FrameType.EXIT, _EXIT.pack(code))


def encode_error(message: str) -> bytes:
    return encode_frame(FrameType.ERROR, message.encode("utf-8", "replace")[:MAX_PAYLOAD])


def decode_resize(payload: bytes) -> tuple[int, int]:
    if len(payload) != _RESIZE.size:
        raise AttachProtocolError(f"RESIZE payload must be {_RESIZE.size} bytes, got {len(payload)}")
    rows, cols = _RESIZE.unpack(payload)
    return rows, cols


def decode_exit(payload: bytes) -> int:
    if len(payload) != _EXIT.size:
        raise AttachProtocolError(f"EXIT payload must be {_EXIT.size} bytes, got {len(payload)}")
    return _EXIT.unpack(payload)[0]


def _u16(value: int) -> int:
    # Terminal sizes are small positive numbers; clamp rather than fail on a silly TIOCGWINSZ.
    return max(0, min(int(value), 0xFFFF))


class FrameDecoder:
    """Incremental decoder: ``feed`` any slice of the byte stream, get every completed frame."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= _HEADER.size:
            raw_type, length = _HEADER.unpack_from(self._buffer)
            if raw_type not in FRAME_NAMES:
                raise AttachProtocolError(f"unknown attach frame type {raw_type}")
            if length > MAX_PAYLOAD:
                raise AttachProtocolError(f"attach frame of {length} bytes exceeds {MAX_PAYLOAD}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(Frame(raw_type, bytes(self._buffer[_HEADER.size:end])))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back; non-zero at end of stream means truncation."""
        return len(self._buffer)
