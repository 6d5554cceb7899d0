"""Sans-I/O HTTP/1.x message reading on top of httptools (llhttp): bytes in, events out.

httptools is the fast parser (llhttp, C, the one Node.js uses): it calls back per header instead of
building objects, which is what keeps a Python proxy's per-request cost low. It parses whatever it is
fed, including the next pipelined request, so the readers queue events in arrival order and the I/O
side consumes them one request at a time, which answers pipelined requests in order.

Limits (Heroku's): each request line and header line at most 8 KB, at most 1000 headers; plus a cap on
a whole head, so a client cannot make httptools buffer megabytes before the first callback.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import httptools

MAX_LINE = 8192
MAX_HEADERS = 1000
MAX_HEAD_BYTES = 256 * 1024

# Body framing of a message, as the proxy must re-frame it for the other side.
NO_BODY = 0
LENGTH = 1
CHUNKED = 2
UNTIL_CLOSE = 3  # responses only: the body ends when the server closes


class ProtocolError(Exception):
    """The peer broke HTTP; ``status`` is what a client gets back (400, 414, 431, 405)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    http_version: str  # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    upgrade: bool  # Upgrade requested (WebSocket); the body, if any, is the tunnel
    framing: int  # NO_BODY, LENGTH or CHUNKED
    host: bytes
    expect_continue: bool
    # The head's bytes as the client sent them, when only Heroku's headers need adding: HTTP/1.1, no
    # hop-by-hop header but one "Connection: keep-alive", no Via, none the router sets.
    passable: bytes | None = None


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    framing: int  # NO_BODY, LENGTH, CHUNKED or UNTIL_CLOSE
    # The head's bytes as the dyno sent them, when it can go to a client with only Via added: HTTP/1.1,
    # no hop-by-hop header but one "Connection: keep-alive", no Via (see headers.client_head).
    passable: bytes | None = None


@dataclass(slots=True)
class Body:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    pass


@dataclass(frozen=True, slots=True)
class Tunnel:
    """The message switched protocols; ``data`` is the first raw bytes after the head."""

    data: bytes


# Heads and bodies are not frozen: a frozen dataclass builds itself through object.__setattr__, which
# costs more per request than parsing the head. Nothing mutates them after the reader made them.
END = EndOfMessage()
Event = RequestHead | ResponseHead | Body | EndOfMessage | Tunnel


# Headers that stop a head from passing through as bytes: hop-by-hop ones and Via both ways, and in
# requests those the router sets itself (headers.py drops or rewrites all of them).
_REWRITTEN = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"via"})
_REWRITTEN_IN_REQUESTS = _REWRITTEN | {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port",
                                       b"x-request-start", b"x-request-id"}


def _passable(whole: bytes | None, plain: bool, conn_ka: bool) -> bytes | None:
    """A head's bytes without its one "Connection: keep-alive" line, when nothing else needs rewriting."""
    if whole is None or not plain or whole[0] in b"\r\n":  # llhttp skips CRLFs before a message
        return None
    if not conn_ka:
        return whole
    at = whole.find(b"\r\nConnection: keep-alive\r\n")
    return None if at < 0 else whole[:at] + whole[at + 24:]  # spelt another way: rebuilt instead


class _Reader:
    """Shared callback plumbing; subclasses set the parser and build their head event."""

    _rewritten = _REWRITTEN
    _rewritten_lengths = frozenset(len(n) for n in _REWRITTEN)

    __slots__ = ("events", "_parser", "_headers", "_head_bytes", "_line_len", "_in_head", "_tail",
                 "_framing", "_upgrade_hdr", "_expect", "_host", "_host_seen", "_failed", "_plain", "_conn_ka",
                 "_head_end", "_between", "_whole_head")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self._failed = False
        self._head_end = 0  # set by the fast head check: where a head that began this read ends
        self._between = True  # no message is partly parsed: the next read starts a head
        self._whole_head: bytes | None = None  # the first head of this read, when all of it is in it
        self._reset_head()
        self._in_head = True
        self._head_bytes = 0
        self._line_len = 0
        self._tail = b""

    def _reset_head(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._framing = NO_BODY
        self._upgrade_hdr = False
        self._expect = False
        self._host = b""
        self._host_seen = False
        self._plain = True  # no header a proxy must drop or rewrite (hop-by-hop, Via)...
        self._conn_ka = False  # ...but for one "Connection: keep-alive", which is cut out by bytes

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._reset_head()
        self._in_head = True
        self._between = False

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if len(headers) >= MAX_HEADERS:
            raise ProtocolError(431, "Too many headers")
        headers.append((name, value))
        n = len(name)
        # Only a few names matter for framing; comparing lengths first keeps this cheap.
        if n == 14 and name.lower() == b"content-length":
            if self._framing == NO_BODY:
                self._framing = LENGTH
        elif n == 17 and name.lower() == b"transfer-encoding":
            if b"chunked" in value.lower():
                self._framing = CHUNKED
        elif n == 4 and name.lower() == b"host":
            if self._host_seen:
                # RFC 9112 3.2: a request with more than one Host is a 400; routing by one while
                # the dyno reads the other would let a client reach an app it did not name.
                raise ProtocolError(400, "More than one Host header")
            self._host = value
            self._host_seen = True
        elif n == 7 and name.lower() == b"upgrade":
            self._upgrade_hdr = True
        elif n == 6 and name.lower() == b"expect":
            self._expect = value.lower() == b"100-continue"
        if n in self._rewritten_lengths and self._plain:
            lower = name.lower()
            if lower in self._rewritten:
                if lower == b"connection" and value.lower() == b"keep-alive" and not self._conn_ka:
                    self._conn_ka = True
                else:
                    self._plain = False

    def on_body(self, body: bytes) -> None:
        if body:
            self.events.append(Body(body))

    def on_message_complete(self) -> None:
        self.events.append(END)
        self._between = True
        # What follows is the next head: its limits count from here.
        self._in_head = True
        self._head_bytes = 0
        self._line_len = 0
        self._tail = b""

    # -- feeding
    def _check_head_limits(self, data: bytes) -> None:
        """Enforce the per-line and per-head caps before httptools buffers anything."""
        if not self._tail and not self._line_len:
            # The usual case: a whole head arrives at a line start in one read, and the end of the head
            # comes within MAX_LINE bytes, so no line or head cap can be broken: one find, no slicing.
            end = data.find(b"\r\n\r\n", 0, MAX_LINE + 2)
            if end >= 0 and self._head_bytes + end + 4 <= MAX_HEAD_BYTES:
                self._head_end = end + 4
                self._head_bytes += end + 4
                return
        # Only the head counts: the body that may follow in the same chunk has no lines.
        probe = self._tail + data
        end = probe.find(b"\r\n\r\n")
        if end >= 0:
            data = data[:max(0, end + 4 - len(self._tail))]
            self._tail = b""
        else:
            self._tail = probe[-3:]
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise ProtocolError(431, "Request header fields too large")
        last_nl = data.rfind(b"\n")
        if last_nl < 0:
            self._line_len += len(data)
            longest = self._line_len
        else:
            longest = self._line_len + data.find(b"\n")
            if len(data) > MAX_LINE:  # only a long chunk can hide a long line in its middle
                longest = max(longest, max(len(line) for line in data[:last_nl].split(b"\n")))
            self._line_len = len(data) - last_nl - 1
        if longest > MAX_LINE or self._line_len > MAX_LINE:
            self._line_too_long()

    def _line_too_long(self) -> None:
        raise ProtocolError(431, "Request header fields too large")


class RequestReader(_Reader):
    """Reads requests from a client connection."""

    _rewritten = _REWRITTEN_IN_REQUESTS
    _rewritten_lengths = frozenset(len(n) for n in _REWRITTEN_IN_REQUESTS)

    __slots__ = ("_url", "_url_parts", "_past_request_line")

    def __init__(self) -> None:
        super().__init__()
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._url_parts: list[bytes] = []
        self._past_request_line = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_parts = []

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._past_request_line = False

    def on_url(self, url: bytes) -> None:
        self._url_parts.append(url)

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._parser
        method = p.get_method()
        if method == b"CONNECT":
            raise ProtocolError(405, "CONNECT is not supported")
        target = b"".join(self._url_parts)
        whole, self._whole_head = self._whole_head, None  # a second head in this read was not whole
        version = p.get_http_version()
        self.events.append(RequestHead(
            method=method, target=target, http_version=version, headers=self._headers,
            keep_alive=p.should_keep_alive(), upgrade=self._upgrade_hdr and p.should_upgrade(),
            framing=self._framing, host=self._host, expect_continue=self._expect,
            passable=_passable(whole, self._plain and version == "1.1", self._conn_ka),
        ))

    def _line_too_long(self) -> None:
        if not self._past_request_line:
            raise ProtocolError(414, "Request-URI too long")
        raise ProtocolError(431, "Request header fields too large")

    def feed(self, data: bytes) -> None:
        """Parse ``data``; events land in ``self.events``. Raises ProtocolError on bad input."""
        if self._failed:
            raise ProtocolError(400, "Bad request")
        if self._in_head:
            if not self._past_request_line and b"\n" in data:
                # The limit a line breaks decides the status: 414 for the request line, else 431.
                self._past_request_line = self._line_len + data.find(b"\n") <= MAX_LINE
            self._head_end = 0
            between = self._between
            self._check_head_limits(data)
            if between and self._head_end:  # a head in one piece can go on as bytes
                self._whole_head = data[:self._head_end]
        try:
            self._parser.feed_data(data)
        except ProtocolError:
            self._failed = True
            raise
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0]
            self.events.append(Tunnel(bytes(data[offset:])))
        except httptools.HttpParserCallbackError as exc:
            self._failed = True
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(400, "Bad request") from None
        except httptools.HttpParserError:
            self._failed = True
            raise ProtocolError(400, "Bad request") from None


class ResponseReader(_Reader):
    """Reads one response at a time from a dyno connection (the router never pipelines to dynos)."""

    __slots__ = ("_reason", "head_only")

    def __init__(self) -> None:
        super().__init__()
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self.head_only = False  # set for a HEAD request: the head is the whole message

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reason = b""

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._parser
        status = p.get_status_code()
        framing = self._framing
        if status < 200 or status in (204, 304) or self.head_only:
            framing = NO_BODY
        elif framing == NO_BODY:
            framing = UNTIL_CLOSE
        keep_alive = p.should_keep_alive() and framing != UNTIL_CLOSE and not self.head_only
        whole, self._whole_head = self._whole_head, None  # a second head in this read was not whole
        version = p.get_http_version()
        self.events.append(ResponseHead(
            status=status, reason=self._reason, http_version=version,
            headers=self._headers, keep_alive=keep_alive, framing=framing,
            passable=_passable(whole, self._plain and version == "1.1", self._conn_ka),
        ))
        if self.head_only and status >= 200:
            # llhttp does not know the request was HEAD and would wait for a body.
            self.events.append(END)

    def _line_too_long(self) -> None:
        raise ProtocolError(502, "Response header line too long")

    def feed(self, data: bytes) -> None:
        if self._in_head:
            self._head_end = 0
            between = self._between
            self._check_head_limits(data)
            # A head the dyno sent in one piece can be passed on as bytes (see headers.client_head).
            if between and self._head_end:
                self._whole_head = data[:self._head_end]
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.events.append(Tunnel(bytes(data[exc.args[0]:])))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(502, "Bad response") from None
        except httptools.HttpParserError:
            raise ProtocolError(502, "Bad response") from None

    def start(self, *, head_only: bool) -> None:
        """Prepare for the response to the next request sent on this connection."""
        self.head_only = head_only
        self._between = True
        self._whole_head = None
        self._in_head = True
        self._head_bytes = 0
        self._line_len = 0
        self._tail = b""
