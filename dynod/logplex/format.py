"""Log line formats, sans I/O: bytes from a dyno's pipe in, Logplex lines out.

A stored line reads ``2026-11-26T12:00:00.123456+00:00 app[web.1]: message``: an RFC 3339 UTC
timestamp with microseconds, the source (``app`` for what a dyno printed, ``dynod`` for the
platform), the dyno or component in brackets, and the message. Messages never hold a newline
(they are split on it) and never an unescaped control character other than TAB and ESC (ESC is
kept so ANSI colours survive, as they do on Heroku).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import UserError

# Heroku splits a line longer than this many bytes into several log lines.
MAX_LINE_BYTES = 10_000

SOURCES = ("app", "dynod")
# `heroku logs --source heroku` is a habit worth honouring: the platform is "dynod" here.
SOURCE_ALIASES = {"heroku": "dynod"}

# C0 controls (but TAB, LF, ESC) and DEL: escaped so a terminal or a syslog parser reading the
# line is never steered by bytes an app printed. LF never reaches here (it splits lines).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]")


# Maps each control byte to 1 and every other byte to 0: translate + memchr finds one in a 64 KiB
# read about five times faster than a regular expression scan.
_CONTROL_FLAGS = bytes(1 if _CONTROL_CHARS.match(chr(b)) else 0 for b in range(256))


def _has_control_bytes(data: bytes) -> bool:
    return b"\x01" in data.translate(_CONTROL_FLAGS)


def timestamp(at: float) -> str:
    """RFC 3339 UTC with microseconds and an explicit +00:00, as Logplex writes it."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")


def line_prefix(at: float, source: str, dyno: str) -> str:
    """Everything before the message; one per batch, since a batch shares time, source and dyno."""
    return f"{timestamp(at)} {source}[{dyno}]: "


def _escape_match(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def escape_text(text: str) -> str:
    return _CONTROL_CHARS.sub(_escape_match, text)


def _cut_point(data: bytes, start: int, limit: int) -> int:
    """Where to end a piece of at most ``limit`` bytes from ``start`` without halving a character.

    Backs up over at most three UTF-8 continuation bytes; if the bytes are not UTF-8 at all,
    cuts at the limit, since escaping will show them byte by byte anyway.
    """
    end = start + limit
    if end >= len(data):
        return len(data)
    cut = end
    for _ in range(3):
        if 0x80 <= data[cut] <= 0xBF:
            cut -= 1
        else:
            break
    if cut <= start or 0x80 <= data[cut] <= 0xBF:
        return end
    return cut


def split_long(line: bytes, limit: int = MAX_LINE_BYTES) -> list[bytes]:
    """Pieces of ``line`` of at most ``limit`` bytes each, split on character boundaries."""
    if len(line) <= limit:
        return [line]
    pieces = []
    start = 0
    while start < len(line):
        cut = _cut_point(line, start, limit)
        pieces.append(line[start:cut])
        start = cut
    return pieces


def decode_lines(lines: list[bytes]) -> list[str]:
    """Raw lines (no LF, each within the size limit) to messages: UTF-8, invalid bytes escaped."""
    out = [raw.decode("utf-8", "backslashreplace") for raw in lines]
    for i, text in enumerate(out):
        if text.endswith("\r"):  # CRLF line endings: the CR belongs to the line break
            text = text[:-1]
        out[i] = escape_text(text)
    return out


class DynoOutputSplitter:
    """Turns the bytes a dyno writes into messages, one per line.

    ``feed`` returns the complete lines in ``data``; a line still open at the end waits for the
    next call, except that any full ``limit``-byte pieces of it are returned at once (so a dyno
    writing one endless line neither grows memory nor delays its output). ``finish`` returns
    what was left at EOF: a last line without a newline is still a line.
    """

    __slots__ = ("_partial", "_limit")

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._partial = b""
        self._limit = limit

    def feed(self, data: bytes) -> list[str]:
        if self._partial:
            data = self._partial + data
        end = data.rfind(b"\n")
        if end < 0:
            self._partial = data
            return self._flush_long_partial()
        body = data[:end]
        self._partial = data[end + 1:]
        raws = body.split(b"\n")
        limit = self._limit
        if len(body) > limit and max(map(len, raws)) > limit:
            raws = [piece for raw in raws for piece in split_long(raw, limit)]
        if b"\r" in body or _has_control_bytes(body):
            messages = decode_lines(raws)
        else:
            # The common case, kept to one C-level pass per line.
            messages = [raw.decode("utf-8", "backslashreplace") for raw in raws]
        if len(self._partial) >= limit:
            messages.extend(self._flush_long_partial())
        return messages

    def _flush_long_partial(self) -> list[str]:
        if len(self._partial) < self._limit:
            return []
        pieces = split_long(self._partial, self._limit)
        # The last piece may still grow: keep it unless it is already full.
        if len(pieces[-1]) < self._limit:
            self._partial = pieces.pop()
        else:
            self._partial = b""
        return decode_lines(pieces)

    def finish(self) -> list[str]:
        rest, self._partial = self._partial, b""
        if not rest:
            return []
        return decode_lines(split_long(rest, self._limit))


def split_message(message: str, limit: int = MAX_LINE_BYTES) -> list[str]:
    """A platform message to log messages: one per line, each within the byte limit, escaped."""
    if message.endswith("\n"):
        message = message[:-1]
    raws = message.encode("utf-8", "surrogateescape").split(b"\n")
    return decode_lines([piece for raw in raws for piece in split_long(raw, limit)])


@dataclass(frozen=True, slots=True)
class LogLine:
    """A stored line taken apart again (for filters and syslog frames)."""

    timestamp: str
    source: str
    dyno: str
    message: str


def parse_line(line: str) -> LogLine | None:
    """The inverse of ``line_prefix(...) + message``; None for text not in that shape."""
    stamp, sep, rest = line.partition(" ")
    if not sep:
        return None
    head, sep, message = rest.partition(": ")
    if not sep or not head.endswith("]"):
        return None
    source, sep, dyno = head[:-1].partition("[")
    if not sep or not source or not dyno:
        return None
    return LogLine(stamp, source, dyno, message)


def check_source(source: str | None) -> str | None:
    """The canonical source for a filter, or a UserError naming the choices."""
    if source is None:
        return None
    canonical = SOURCE_ALIASES.get(source, source)
    if canonical not in SOURCES:
        raise UserError(f"Unknown log source {source!r}: use 'app' (your dynos) or 'dynod' (the platform).")
    return canonical


@dataclass(frozen=True, slots=True)
class LineFilter:
    """`dynoctl logs --ps web --source app`: ``ps`` "web" matches web.1, web.2; "web.1" only itself."""

    ps: str | None = None
    source: str | None = None

    @classmethod
    def build(cls, ps: str | None, source: str | None) -> LineFilter:
        return cls(ps or None, check_source(source))

    @property
    def everything(self) -> bool:
        return self.ps is None and self.source is None

    def matches(self, source: str, dyno: str) -> bool:
        if self.source is not None and source != self.source:
            return False
        ps = self.ps
        if ps is None or dyno == ps:
            return True
        return dyno.startswith(ps) and dyno[len(ps):len(ps) + 1] == "."

    def matches_line(self, line: str) -> bool:
        if self.everything:
            return True
        parsed = parse_line(line)
        return parsed is not None and self.matches(parsed.source, parsed.dyno)
