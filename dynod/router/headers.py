"""Rewriting heads as they cross the router: hop-by-hop headers out, Heroku's headers in. No I/O.

Connection-level headers (RFC 9110 7.6.1) describe one hop, so the router drops them both ways and
frames each side itself: dynos always get HTTP/1.1 keep-alive, clients get what their version allows.
"""

from __future__ import annotations

import os
import re

from .parse import CHUNKED, NO_BODY, UNTIL_CLOSE, RequestHead, ResponseHead

VIA = b"1.1 dynod"
_VIA_LINE = b"Via: " + VIA + b"\r\n\r\n"
MAX_REQUEST_ID = 200
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                         b"transfer-encoding", b"upgrade"})
# Headers the router sets itself: a client's copy would be a lie (X-Forwarded-For is appended to).
_ROUTER_SET = frozenset({b"x-forwarded-proto", b"x-forwarded-port", b"x-request-start",
                         b"x-request-id", b"x-forwarded-for"})
_REQUEST_ID_OK = re.compile(rb"^[\x21-\x7e]{1,200}$")
_CONNECTION_TOKENS_SAFE = frozenset({b"keep-alive", b"close", b"upgrade", b""})


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Extra header names a Connection header marks as hop-by-hop (rare: usually empty)."""
    extra: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            for token in value.lower().split(b","):
                token = token.strip()
                if token not in _CONNECTION_TOKENS_SAFE:
                    extra.add(token)
    return extra


class _RequestIds:
    """uuid4 strings from a buffer of random hex refilled 128 ids at a time.

    uuid.uuid4() makes a getrandom call and a UUID object per request, which is a visible share of
    the router's per-request cost; the ids are the same: 122 random bits, version 4, RFC 4122 variant.
    """

    __slots__ = ("_hex", "_pos")
    _BATCH = 128
    # The variant nibble is 10xx: map a random hex digit's low two bits onto 8, 9, a, b.
    _VARIANT = {c: ord("89ab"[int(chr(c), 16) & 3]) for c in b"0123456789abcdef"}

    def __init__(self) -> None:
        self._hex = b""
        self._pos = 0

    def __call__(self) -> bytes:
        pos = self._pos
        if pos >= len(self._hex):
            self._hex = os.urandom(16 * self._BATCH).hex().encode()
            pos = 0
        self._pos = pos + 32
        h = self._hex[pos:pos + 32]
        return b"%s-%s-4%s-%c%s-%s" % (h[:8], h[8:12], h[13:16], self._VARIANT[h[16]], h[17:20], h[20:])


new_request_id = _RequestIds()


def pick_request_id(head: RequestHead) -> bytes:
    """The client's X-Request-Id when it is at most 200 visible characters, else a new uuid4."""
    if head.passable is not None:  # a passable head has no X-Request-Id (see parse.RequestHead)
        return new_request_id()
    for name, value in head.headers:
        if len(name) == 12 and name.lower() == b"x-request-id":
            if _REQUEST_ID_OK.match(value):
                return value
            break
    return new_request_id()


def upstream_head(head: RequestHead, *, client_ip: bytes, proto: bytes, port: bytes,
                  request_id: bytes, start_ms: int) -> bytes:
    """The request head sent to a dyno: HTTP/1.1, keep-alive, Heroku's forwarding headers."""
    passable = head.passable
    if passable is not None:
        # Nothing to drop or replace: the client's bytes with Heroku's headers added.
        return b"%sX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Port: %s\r\n" \
               b"X-Request-Start: %d\r\nX-Request-Id: %s\r\nVia: %s\r\n\r\n" % (
                   passable[:-2], client_ip, proto, port, start_ms, request_id, VIA)
    extra = _connection_tokens(head.headers)
    lines = [b"%s %s HTTP/1.1\r\n" % (head.method, head.target)]
    forwarded_for = client_ip
    via = VIA
    for name, value in head.headers:
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in extra:
            continue
        if lower in _ROUTER_SET:
            if lower == b"x-forwarded-for":
                forwarded_for = value + b", " + client_ip
            continue
        if lower == b"via":
            via = value + b", " + VIA
            continue
        lines.append(b"%s: %s\r\n" % (name, value))
    if head.framing == CHUNKED:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if head.upgrade:
        for name, value in head.headers:
            if name.lower() == b"upgrade":
                lines.append(b"Upgrade: %s\r\nConnection: Upgrade\r\n" % value)
                break
    lines.append(
        b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Port: %s\r\n"
        b"X-Request-Start: %d\r\nX-Request-Id: %s\r\nVia: %s\r\n\r\n"
        % (forwarded_for, proto, port, start_ms, request_id, via))
    return b"".join(lines)


def client_head(head: ResponseHead, *, framing: int, keep_alive: bool, client_version: str) -> bytes:
    """The response head sent to the client; ``framing`` is how the router frames the body for it."""
    passable = head.passable
    if passable is not None and keep_alive and framing == head.framing and client_version == "1.1":
        # Nothing to drop, re-frame or announce (keep-alive is HTTP/1.1's default): the dyno's bytes
        # with Via added, instead of a header-by-header rebuild.
        return passable[:-2] + _VIA_LINE
    extra = _connection_tokens(head.headers) if head.status != 101 else set()
    lines = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason)]
    via = VIA
    for name, value in head.headers:
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in extra:
            if head.status == 101 and lower in (b"upgrade", b"connection"):
                lines.append(b"%s: %s\r\n" % (name, value))
            continue
        if lower == b"via":
            via = value + b", " + VIA
            continue
        if (framing == CHUNKED or framing == UNTIL_CLOSE) and lower == b"content-length":
            continue  # the router re-frames this body; a stale length would corrupt the stream
        lines.append(b"%s: %s\r\n" % (name, value))
    if framing == CHUNKED:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if head.status >= 200 and head.status != 101:
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        elif client_version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"Via: %s\r\n\r\n" % via)
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
__all__ = ["upstream_head", "client_head", "pick_request_id", "new_request_id", "chunk", "LAST_CHUNK", "NO_BODY"]
