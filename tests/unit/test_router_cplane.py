"""The plain-HTTP plane's C parse (cplane.c) against the Python path it stands in for.

For every input, C either declines (None) or returns exactly what parse.py's readers and headers.py's
rewriting make of the same bytes: the RequestHead, the dyno's head, the body, the client's bytes. A
corpus, then generated and mutated messages (odd whitespace, duplicate and conflicting lengths, NUL,
CR, LF and high bytes, huge heads, pipelined and truncated ones). No sockets, no root.
"""

from __future__ import annotations

import random
import re

import pytest

from dynod.router import cplane
from dynod.router.headers import client_head, upstream_head
from dynod.router.parse import END, LENGTH, NO_BODY, Body, ProtocolError, RequestHead, RequestReader, ResponseReader

cplane.configure(RequestHead)

IP, PROTO, PORT, START_MS = b"127.0.0.1", b"http", b"8080", 1764650000123
_UUID4 = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def python_request(data: bytes) -> tuple[RequestHead, bytes, list] | None:
    """What the Python path parses from ``data`` (None: it refuses it)."""
    reader = RequestReader()
    try:
        reader.feed(data)
    except ProtocolError:
        return None
    events = list(reader.events)
    if not events or type(events[0]) is not RequestHead:
        return None
    head = events[0]
    body = b"".join(ev.data for ev in events[1:] if type(ev) is Body)
    return head, body, events


def check_request(data: bytes) -> bool:
    """Assert C's answer for ``data`` is the Python path's or a decline; True when C took it."""
    fast = cplane.request(data, IP, PROTO, PORT, START_MS)
    if fast is None:
        return False
    head, up, body, request_id = fast
    ref = python_request(data)
    assert ref is not None, f"C took what the Python path refuses: {data!r}"
    ref_head, ref_body, events = ref
    # The whole request, nothing after it: the plane sends it in one write.
    assert events[-1] is END and all(type(ev) is Body for ev in events[1:-1]), data
    assert head == ref_head, data
    assert body == ref_body, data
    assert head.framing in (NO_BODY, LENGTH) and not head.upgrade and not head.expect_continue
    assert head.method != b"CONNECT"
    assert len(body) <= 16 * 1024
    # The id: the client's when pick_request_id would keep it, else a new one of the same form.
    client_ids = [v for n, v in head.headers if n.lower() == b"x-request-id"]
    if head.passable is None and client_ids and re.match(rb"^[\x21-\x7e]{1,200}$", client_ids[0]):
        assert request_id == client_ids[0]
    else:
        assert _UUID4.match(request_id), request_id
    assert up == upstream_head(head, client_ip=IP, proto=PROTO, port=PORT, request_id=request_id,
                               start_ms=START_MS), data
    return True


def check_response(data: bytes, head_only: bool = False, client_keep: bool = True, client_v10: bool = False) -> bool:
    fast = cplane.response(data, head_only, client_keep, client_v10)
    if fast is None:
        return False
    out, status, nbytes, keep_alive = fast
    reader = ResponseReader()
    reader.start(head_only=head_only)
    try:
        reader.feed(data)
    except ProtocolError:
        raise AssertionError(f"C took a response the Python path refuses: {data!r}") from None
    events = list(reader.events)
    rhead = events[0]
    # (For a HEAD, parse.py ends the message itself and llhttp may end it again: the first END counts.)
    assert END in events, data
    events = events[:events.index(END) + 1]
    assert all(type(ev) is Body for ev in events[1:-1]), data
    # What plane._plain_response relays itself: final, not 101, Content-Length framed or bodiless.
    assert rhead.status >= 200 and rhead.status != 101 and rhead.framing in (NO_BODY, LENGTH)
    body = b"".join(ev.data for ev in events[1:-1])
    expected = client_head(rhead, framing=rhead.framing, keep_alive=client_keep,
                           client_version="1.0" if client_v10 else "1.1") + body
    assert out == expected, data
    assert (status, nbytes, keep_alive) == (rhead.status, len(body), rhead.keep_alive), data
    return True


REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n",
    b"GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: myapp.localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nconnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n1234567",
    b"DELETE /d HTTP/1.1\r\nHost: a\r\n\r\n",
    b"OPTIONS /o HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PATCH /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: has space\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: " + b"r" * 201 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: first\r\nX-Request-Id: second\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Request-Start: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 cdn\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 cdn\r\nVIA: 1.0 other\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:a\r\nX:\tb\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Only: no host\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /" + b"p" * 8000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
]

# Smuggling and framing tricks: C must decline every one; the Python path decides as before.
DECLINED = [
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 \r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",  # obs-fold
    b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\tz\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n",
    b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined: parse.py queues
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel",  # body still coming
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nhello",  # more than the length: next request
    b"GET / HTTP/1.1\r\nHost: a\r\n",  # truncated head
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n" + b"x" * 20000,  # an upload: trio's
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 9000 + b"\r\n\r\n",  # a head over 8 KiB
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"Host: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n",
]


@pytest.mark.parametrize("data", REQUESTS)
def test_common_requests_are_taken_and_equal_the_python_path(data: bytes) -> None:
    assert check_request(data), data


@pytest.mark.parametrize("data", DECLINED)
def test_uncommon_and_smuggling_requests_are_declined(data: bytes) -> None:
    assert cplane.request(data, IP, PROTO, PORT, START_MS) is None


def test_smuggling_attempts_are_refused_by_the_python_path_as_before() -> None:
    """What C declines goes to parse.py, which still refuses the smuggling forms outright."""
    for data in (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    ):
        assert cplane.request(data, IP, PROTO, PORT, START_MS) is None
        assert python_request(data) is None, data


def test_new_request_ids_are_uuid4_and_differ() -> None:
    ids = {cplane.request(REQUESTS[0], IP, PROTO, PORT, START_MS)[3] for _ in range(300)}
    assert len(ids) == 300 and all(_UUID4.match(i) for i in ids)
    variants = {i[19:20] for i in ids}
    assert variants == {b"8", b"9", b"a", b"b"}


_NAMES = [b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Connection", b"Transfer-Encoding",
          b"X-Request-Id", b"X-Forwarded-For", b"Via", b"Accept", b"User-Agent", b"Cookie", b"X-Forwarded-Proto",
          b"Upgrade", b"Expect", b"Keep-Alive", b"TE", b"X-Custom"]
_VALUES = [b"a", b"myapp.localhost", b"keep-alive", b"close", b"Keep-Alive", b"0", b"5", b"12", b"chunked",
           b"1.2.3.4", b"x y", b"\tq", b"100-continue", b"websocket", b"abc-def", b"*/*", b"  spaced"]
_BYTES = [b"\x00", b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x7f", b"\x80", b"\xff", b":", b"\r\n\r\n", b"0", b"\x0b"]


def _generated(rng: random.Random) -> bytes:
    method = rng.choice([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"])
    target = rng.choice([b"/", b"/a", b"/a?b=c", b"/%41", b"/x#f", b"/[]", b"/{}", b"/a b"])
    version = rng.choice([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"])
    lines = [b"%s %s %s" % (method, target, version)]
    body = b""
    for _ in range(rng.randrange(0, 6)):
        name = rng.choice(_NAMES)
        value = rng.choice(_VALUES)
        sep = rng.choice([b": ", b":", b":  ", b":\t"])
        lines.append(name + sep + value)
        if name.lower() == b"content-length" and value.isdigit():
            body = b"b" * int(value)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _mutated(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(0, len(data) + 1)
        op = rng.randrange(3)
        if op == 0:
            data[at:at] = rng.choice(_BYTES)
        elif op == 1 and at < len(data):
            del data[at]
        elif at < len(data):
            data[at] = rng.randrange(256)
    return bytes(data)


def test_generated_and_mutated_requests_equal_the_python_path_or_are_declined() -> None:
    rng = random.Random(16)
    taken = 0
    for _ in range(6000):
        data = _generated(rng)
        taken += check_request(data)
        taken += check_request(_mutated(rng, data))
        base = rng.choice(REQUESTS)
        taken += check_request(_mutated(rng, base))
        taken += check_request(base[:rng.randrange(len(base))])  # truncated
    assert taken > 1500  # the comparison ran on many taken requests (2,284 of 24,000 with this seed)


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n\r\nhello from a dyno\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nconnection: Keep-Alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
    b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\nVia: 1.1 cdn\r\n\r\nbad",
    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nSet-Cookie: a=b\r\nSet-Cookie: c=d\r\nContent-Length: 0\r\n\r\n",
]
RESPONSES_DECLINED = [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",  # the rest still coming
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nok",  # more than the length
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-A\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK \r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX: \xff\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/2 200\r\nContent-Length: 2\r\n\r\nok",
]


@pytest.mark.parametrize("data", RESPONSES)
def test_common_responses_equal_the_python_path(data: bytes) -> None:
    for client_keep in (True, False):
        for client_v10 in (False, True):
            assert check_response(data, False, client_keep, client_v10), data


def test_a_head_response_has_no_body_and_is_not_pooled() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n"
    assert check_response(data, head_only=True)
    assert cplane.response(data, True, True, False)[3] is False
    assert cplane.response(data + b"x" * 18, True, True, False) is None


@pytest.mark.parametrize("data", RESPONSES_DECLINED)
def test_uncommon_responses_are_declined(data: bytes) -> None:
    assert cplane.response(data, False, True, False) is None


def test_generated_and_mutated_responses_equal_the_python_path_or_are_declined() -> None:
    rng = random.Random(61)
    taken = 0
    for _ in range(4000):
        base = rng.choice(RESPONSES)
        flags = (rng.random() < 0.1, rng.random() < 0.8, rng.random() < 0.2)
        taken += check_response(_mutated(rng, base), *flags)
        taken += check_response(base[:rng.randrange(len(base))], *flags)
        lines = [rng.choice([b"HTTP/1.1 200 OK", b"HTTP/1.0 201 Created", b"HTTP/1.1 404 Nope", b"HTTP/1.1 204 X"])]
        n = rng.randrange(0, 4)
        for _ in range(rng.randrange(0, 5)):
            lines.append(rng.choice(_NAMES) + rng.choice([b": ", b":"]) + rng.choice(_VALUES))
        lines.append(b"Content-Length: %d" % n)
        taken += check_response(b"\r\n".join(lines) + b"\r\n\r\n" + b"z" * n, *flags)
    assert taken > 1000


def test_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        cplane.request("GET / HTTP/1.1\r\n\r\n", IP, PROTO, PORT, START_MS)  # type: ignore[arg-type]
    assert cplane.request(REQUESTS[0], b"1" * 65, PROTO, PORT, START_MS) is None  # declined, not an error
    assert check_request(REQUESTS[0]) and cplane.request(REQUESTS[0], b"f" * 64, PROTO, PORT, START_MS)
    with pytest.raises(TypeError):
        cplane.response(b"", True)  # type: ignore[call-arg]


def _records(rng: random.Random) -> list:
    from dynod.router import codes

    items: list = []
    for _ in range(3000):
        pick = rng.random()
        if pick < 0.05:
            items.append(b'{"type":"wake","app":"a"}\n')  # control messages already encoded pass as they are
            continue
        app = rng.choice(["myapp", "bench", "my-app-2", "caf\u00e9", 'q"uote', "back\\slash", "tab\t", "del\x7f"])
        method = rng.choice([b"GET", b"POST", b"G\"T"])
        path = rng.choice([b"/", b"/a?b=1&c=%20", b'/q"', b"/back\\", b"/caf\xc3\xa9", b"/\x01", b"/\x7f", b"/ sp"])
        host = rng.choice([b"myapp.localhost", b"h\xff", b"a b"])
        rid = rng.choice([b"0b7d5c1e-4b7a-4c3e-9a1f-2d3c4b5a6e7f", b"client-id", b"r\\"])
        fwd = rng.choice([b"127.0.0.1", b"::1", b"203.0.113.9, 127.0.0.1"])
        dyno = rng.choice([b"web.1", b"web.12", b""])
        connect = rng.choice([None, 0.0, 0.0005, 0.0015, 0.0025, 1e-9, 12.3456, 0])
        service = rng.choice([None, 0.0, 0.0004999, 0.0005, 0.0125, 30.0, rng.random(), float("nan"), 2.5e-3])
        status = rng.choice([200, 201, 304, 503, True])
        nbytes = rng.choice([0, 18, 1048576, None, 2**70])
        code = rng.choice([None, None, None, codes.H12, codes.H27])
        if type(service) is float and service != service and code is not None:
            service = 0.0
        items.append((app, method, path, host, rid, fwd, dyno, connect, service, status, nbytes,
                      rng.choice([b"http", b"https"]), code))
    return items


def test_log_batches_are_byte_for_byte_the_python_ones() -> None:
    from dynod.router.logline import access_message

    rng = random.Random(7)
    for _ in range(5):
        items = [i for i in _records(rng) if type(i) is bytes or not (type(i[8]) is float and i[8] != i[8])]
        expected = b"".join(i if type(i) is bytes else access_message(*i) for i in items)
        assert cplane.access_batch(items, access_message) == expected
    assert cplane.access_batch([], access_message) == b""


def test_a_log_record_c_cannot_format_goes_to_the_fallback() -> None:
    seen = []

    def fallback(*record):
        seen.append(record)
        return b"fallback\n"

    record = ("a", b"GET", b"/", b"h", b"r", b"1.2.3.4", b"web.1", 0.0, float("nan"), 200, 1, b"http", None)
    common = ("a", b"GET", b"/", b"h", b"r", b"1.2.3.4", b"web.1", 0.0, 0.0025, 200, 1, b"http", None)
    out = cplane.access_batch([record, common, b"x\n"], fallback)
    assert seen == [record]
    assert out == (b"fallback\n" + b'{"type":"log","app":"a","line":"at=info method=GET path=\\"/\\" host=h '
                   b'request_id=r fwd=\\"1.2.3.4\\" dyno=web.1 connect=0ms service=2ms status=200 bytes=1 '
                   b'protocol=http"}\n' + b"x\n")
    with pytest.raises(TypeError):
        cplane.access_batch([object()], fallback)
    with pytest.raises(TypeError):
        cplane.access_batch([record], lambda *r: "not bytes")


def test_a_forked_child_does_not_repeat_its_parents_request_ids() -> None:
    import os

    cplane.request(REQUESTS[0], IP, PROTO, PORT, START_MS)  # the pool is filled and partly used
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.write(write_end, cplane.request(REQUESTS[0], IP, PROTO, PORT, START_MS)[3])
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert _UUID4.match(child_id) and child_id != cplane.request(REQUESTS[0], IP, PROTO, PORT, START_MS)[3]
