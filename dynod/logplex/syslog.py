"""Drain frames, sans I/O: stored lines to RFC 5424 messages framed by octet counting (RFC 6587).

Logplex writes ``<PRI>1 TIMESTAMP HOST APP-NAME PROCID - - MSG``: HOST is the drain token for
syslog drains (so a receiver can tell drains apart) and ``host`` for HTTPS drains (the token
rides in the Logplex-Drain-Token header); APP-NAME is the source (``app`` or ``dynod``), PROCID
the dyno (``web.1``, ``router``), no MSGID and no structured data. Facilities follow Heroku's:
local7 for app output, local3 for the router, local0 for other platform lines, and local5
warnings for Logplex's own L10/L11 notices.
"""

from __future__ import annotations

from .format import parse_line, timestamp

FACILITY_LOCAL0 = 16
FACILITY_LOCAL3 = 19
FACILITY_LOCAL5 = 21
FACILITY_LOCAL7 = 23
SEVERITY_WARNING = 4
SEVERITY_INFO = 6

# The component name Logplex's own notices carry: dynod[logplex].
LOGPLEX_PROCID = "logplex"


def priority(source: str, dyno: str) -> int:
    if source == "app":
        return FACILITY_LOCAL7 * 8 + SEVERITY_INFO
    if dyno == "router":
        return FACILITY_LOCAL3 * 8 + SEVERITY_INFO
    if dyno == LOGPLEX_PROCID:
        return FACILITY_LOCAL5 * 8 + SEVERITY_WARNING
    return FACILITY_LOCAL0 * 8 + SEVERITY_INFO


def _header_field(value: str) -> str:
    """RFC 5424 header fields are 1-48 printable US-ASCII characters; anything else is "-"."""
    if not value or len(value) > 48 or not value.isascii() or not value.isprintable() or " " in value:
        return "-"
    return value


def _header(line: str, host: str) -> tuple[str, bytes]:
    """(the stored line's prefix, the RFC 5424 header replacing it); ("", fallback) for a line
    not in the stored shape (never produced by this package; kept deliverable, not dropped)."""
    parsed = parse_line(line)
    if parsed is None:
        return "", f"<{FACILITY_LOCAL0 * 8 + SEVERITY_INFO}>1 - {_header_field(host)} dynod - - - ".encode()
    prefix = line[: len(line) - len(parsed.message)]
    header = (f"<{priority(parsed.source, parsed.dyno)}>1 {parsed.timestamp} {_header_field(host)} "
              f"{_header_field(parsed.source)} {_header_field(parsed.dyno)} - - ")
    return prefix, header.encode()


def message(line: str, host: str) -> bytes:
    """One stored line as an RFC 5424 message (without framing)."""
    prefix, header = _header(line, host)
    return header + line[len(prefix):].encode("utf-8", "backslashreplace")


def frame(msg: bytes) -> bytes:
    """RFC 6587 octet counting: the message length in decimal, a space, the message."""
    return b"%d %s" % (len(msg), msg)


def frames(lines: list[str], host: str) -> bytes:
    """Lines as one buffer of framed messages. Lines come in runs sharing time, source and dyno
    (one pump read, one emit), so the header is built once per run, not once per line."""
    out = []
    prefix: str | None = None
    header = b""
    for line in lines:
        if prefix is None or not line.startswith(prefix) or not prefix:
            prefix, header = _header(line, host)
        body = line[len(prefix):].encode("utf-8", "backslashreplace")
        out.append(b"%d %s%s" % (len(header) + len(body), header, body))
    return b"".join(out)


def l10_message(dropped: int, since: float) -> str:
    """Logplex's notice that a drain's buffer overflowed, word for word."""
    return f"Error L10 (output buffer overflow): {dropped} messages dropped since {timestamp(since)}."


def l11_message(dropped: int, since: float) -> str:
    """Logplex's notice that a tail session fell behind, word for word."""
    return (f"Error L11 (Tail buffer overflow) -> This tail session dropped {dropped} messages "
            f"since {timestamp(since)}.")
