"""Newline-delimited JSON, the router's control framing (dynod <-> router, router <-> workers). No I/O."""

from __future__ import annotations

import json
from typing import Any

from ..errors import UserError

MAX_MESSAGE = 16 * 1024 * 1024  # a full routes snapshot or cert set of a big host fits many times over


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


class LineSplitter:
    """Bytes in, complete lines out (without the newline)."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            self._partial += data
            if len(self._partial) > MAX_MESSAGE:
                self._partial = b""
                raise UserError(f"Control message longer than {MAX_MESSAGE} bytes.")
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return [line for line in lines if line.strip()]
