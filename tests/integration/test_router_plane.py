"""The router's plain-HTTP plane (its own epoll) against real dynos and real sockets.

Most tests elsewhere send one request per fresh pool, which trio serves (a connect is trio's); these
warm each dyno's pool first, so the requests under test start in the plane (``plane_requests``
counts them), and check it keeps the rules: Heroku's headers and log line, pipelining in order,
backpressure against a slow reader, H12/H13/H15/H18, the resend on a fresh connection, 408 for a
slowloris on a kept-alive connection, and no fd left behind.
"""

from __future__ import annotations

import http.client
import re
import socket
import time

import pytest

from dynod.router.testing import (
    Dyno,
    RouterProcess,
    close_silently,
    echo_after_continue,
    process_fds,
    slow,
    stall,
    truncated,
)

pytestmark = pytest.mark.integration

FAST = ["--request-timeout", "1", "--idle-timeout", "1", "--connect-timeout", "0.5", "--header-timeout", "1",
        "--keepalive-timeout", "2"]
MID = bytes(range(256)) * 400  # 100 KiB: relayed by the plane, shorter than what is spliced
LONG = bytes(range(256)) * 4096  # 1 MiB: handed to trio after its head, for splice


def _mid(h):
    h.send_response(200)
    h.send_header("Content-Length", str(len(MID)))
    h.end_headers()
    h.wfile.write(MID)


def _long(h):
    h.send_response(200)
    h.send_header("Content-Length", str(len(LONG)))
    h.end_headers()
    h.wfile.write(LONG)


def _chunked(h):
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    h.wfile.write(b"5\r\nhello\r\n0\r\n\r\n")


def _then_close(h):
    """Answer with keep-alive, then close the connection while the router holds it idle."""
    h.send_response(200)
    h.send_header("Content-Length", "2")
    h.end_headers()
    h.wfile.write(b"ok")
    time.sleep(0.3)
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def _one_write(h):
    """Head and body in one write, as most app servers send a short answer: whole in the plane's first read."""
    body = b"one write " + h.path.encode()
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def _head_in_two_writes(h):
    """A HEAD's answer whose head ends in a second write: C declines the first read, parse.py goes on."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n")
    h.wfile.flush()
    time.sleep(0.05)
    h.wfile.write(b"X-Split: yes\r\n\r\n")


BOGUS = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbogus"


def _then_bogus(h):
    """Answer, then, unasked, a response ready for whatever request the idle connection carries next."""
    h.send_response(200)
    h.send_header("Content-Length", "2")
    h.end_headers()
    h.wfile.write(b"ok")
    time.sleep(0.3)
    h.wfile.write(BOGUS)


HANDLERS = {"/then-close": _then_close, "/then-bogus": _then_bogus,
            "/slow": slow, "/close": close_silently, "/truncated": truncated, "/stall": stall,
            "/mid": _mid, "/one-write": _one_write, "/chunked": _chunked, "/long": _long,
            "/continue": echo_after_continue, "/head-split": _head_in_two_writes}


@pytest.fixture(scope="module")
def dyno():
    d = Dyno("web.1", HANDLERS)
    yield d
    d.close()


@pytest.fixture(scope="module")
def shared_router(dyno):
    r = RouterProcess(workers=1, extra=FAST)  # one worker: the pool warmed is the one used
    r.routes({"one": {"dynos": [dyno.route()]}})
    yield r
    r.stop()


@pytest.fixture
def router(shared_router):
    get(shared_router)  # a pooled connection to the dyno: the next request starts in the plane
    shared_router.logs(0.05)
    return shared_router


def get(router, path="/", headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "one.localhost", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def answer(s: socket.socket) -> bytes:
    """One response off a raw socket (the dyno writes head and body apart): head and Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def in_plane(router) -> int:
    return sum(w["plane_requests"] for w in router.stats()["workers"])


def log_for(router, pattern, timeout=3.0):
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        for _app, line in router.logs(0.2):
            seen.append(line)
            if re.search(pattern, line):
                return line
    raise AssertionError(f"no log line matching {pattern!r} in {seen[-5:]}")


def test_kept_alive_requests_are_served_by_the_plane_with_herokus_headers_and_log_line(router, dyno):
    before = in_plane(router)
    dyno.seen.clear()
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=10)
    for i in range(20):
        conn.request("GET", f"/n/{i}?q=1", headers={"Host": "one.localhost", "X-Request-Id": f"plane-{i}",
                                                     "X-Forwarded-For": "203.0.113.7"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == f"web.1 GET /n/{i}?q=1".encode()
        assert resp.getheader("Via") == "1.1 dynod"
    conn.close()
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=10) as s:
        # A small body in the same write as its head (http.client writes them apart): whole, so the plane's.
        s.sendall(b"POST /form HTTP/1.1\r\nHost: one.localhost\r\nContent-Length: 7\r\n\r\na=1&b=2")
        assert answer(s).endswith(b"\r\n\r\nweb.1 POST /form")
    assert in_plane(router) - before == 21
    seen = dyno.seen[-2]
    assert seen["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1" and seen["X-Request-Id"] == "plane-19"
    assert seen["X-Forwarded-Proto"] == "http" and seen["X-Forwarded-Port"] == str(router.http_port)
    assert seen["Via"] == "1.1 dynod" and abs(int(seen["X-Request-Start"]) - time.time() * 1000) < 5000
    line = log_for(router, "request_id=plane-19")
    assert re.fullmatch(r'at=info method=GET path="/n/19\?q=1" host=one\.localhost request_id=plane-19 '
                        r'fwd="127\.0\.0\.1" dyno=web\.1 connect=0ms service=\d+ms status=200 '
                        r'bytes=19 protocol=http', line), line


def test_pipelined_requests_are_answered_in_order_and_a_slow_reader_gets_every_byte(router):
    before = in_plane(router)
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=10) as s:
        # Requests for 100 KiB each, sent at once and read only later: the plane must stop reading the
        # dyno while the client's socket is full, and lose nothing.
        s.sendall(b"".join(b"GET /mid HTTP/1.1\r\nHost: one.localhost\r\n\r\n" for _ in range(8))
                  + b"GET /last HTTP/1.1\r\nHost: one.localhost\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)  # under the 1 s idle timeout: a slow reader is not an idle dyno
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    out = b"".join(chunks)
    assert out.count(b"HTTP/1.1 200 OK") == 9 and out.count(MID) == 8
    assert out.endswith(b"web.1 GET /last") and b"Connection: close" in out.rsplit(b"HTTP/1.1", 1)[1]
    assert in_plane(router) - before >= 8


def test_responses_the_plane_hands_to_trio_keep_their_framing(router):
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=10)
    conn.request("GET", "/chunked", headers={"Host": "one.localhost"})  # chunked: trio relays it
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked" and resp.read() == b"hello"
    before = in_plane(router)
    conn.request("GET", "/again", headers={"Host": "one.localhost"})  # back in the plane, same connection
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b"web.1 GET /again"
    conn.close()
    assert in_plane(router) - before == 1


def test_an_interim_head_and_a_long_body_go_on_in_trio_from_where_the_plane_was(router):
    before = in_plane(router)
    spliced = sum(w["bodies_spliced"] for w in router.stats()["workers"])
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=10) as s:
        # A whole body sent with Expect: the dyno's 100 Continue comes to the plane, which hands over.
        s.sendall(b"POST /continue HTTP/1.1\r\nHost: one.localhost\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 7\r\n\r\npayload")
        data = b""
        while not data.endswith(b"payload"):
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 100") and b"HTTP/1.1 201" in data
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=10)
    conn.request("GET", "/", headers={"Host": "one.localhost"})
    assert conn.getresponse().read() == b"web.1 GET /"
    conn.request("GET", "/long", headers={"Host": "one.localhost"})  # pooled: started in the plane
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == LONG
    conn.request("GET", "/after", headers={"Host": "one.localhost"})  # the connection back in the plane
    assert conn.getresponse().read() == b"web.1 GET /after"
    conn.close()
    assert sum(w["bodies_spliced"] for w in router.stats()["workers"]) == spliced + 1
    assert in_plane(router) - before >= 3  # /continue, /long and /after (the plain GET's pool may be cold)


def test_failures_in_the_plane_are_h12_h13_h15_h18_and_leave_no_fd(router):
    worker = router.worker_pids()[0]
    fds_before = process_fds(worker)
    before = in_plane(router)
    t0 = time.monotonic()
    assert get(router, "/slow")[0] == 503
    assert 0.9 < time.monotonic() - t0 < 2.5
    log_for(router, 'code=H12 desc="Request timeout"')
    get(router)  # pooled again (the H12 closed its connection)
    # A pooled connection the dyno closes under a GET is resent once on a fresh one: closed again, H13.
    assert get(router, "/close")[0] == 503
    log_for(router, 'code=H13 desc="Connection closed without response"')
    get(router)
    with pytest.raises(http.client.IncompleteRead):
        get(router, "/truncated")
    log_for(router, 'code=H18 desc="Server Request Interrupted"')
    get(router)
    with pytest.raises(http.client.IncompleteRead):
        get(router, "/stall")
    log_for(router, 'code=H15 desc="Idle connection"')
    assert in_plane(router) - before == 4  # the four failures; each get() between connects, in trio
    time.sleep(3.5)  # the dyno's stalled handlers end; their connections close
    get(router)
    assert process_fds(worker) <= fds_before + 1  # at most one more pooled connection


def test_a_slowloris_on_a_kept_alive_connection_gets_408_and_an_idle_one_is_closed(router):
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=10) as s:
        s.sendall(b"GET /first HTTP/1.1\r\nHost: one.localhost\r\n\r\n")
        first = answer(s)
        assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"web.1 GET /first")
        s.sendall(b"GET /second HTTP/1.1\r\nHost: one")  # never finished
        t0 = time.monotonic()
        out = s.recv(65536)
        assert out.startswith(b"HTTP/1.1 408") and 0.7 < time.monotonic() - t0 < 2.5
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=10) as s:
        s.sendall(b"GET /first HTTP/1.1\r\nHost: one.localhost\r\n\r\n")
        assert answer(s).endswith(b"web.1 GET /first")
        t0 = time.monotonic()
        assert s.recv(65536) == b""  # closed quietly at the keep-alive timeout
        assert 1.5 < time.monotonic() - t0 < 4


def test_an_idle_pooled_connection_the_dyno_closes_is_not_sent_the_next_request(router):
    # The plane skips the pool's peek for a connection its epoll watched quietly; the dyno's close
    # is an edge, so the next request must not go out on it (it goes to trio, which connects anew).
    assert get(router, "/then-close")[2] == b"ok"
    time.sleep(0.8)  # the dyno's close arrived while the connection sat idle in the plane's pool
    before = in_plane(router)
    status, _, body = get(router)
    assert (status, body) == (200, b"web.1 GET /")
    assert in_plane(router) == before  # no request started in the plane on the closed connection
    log_for(router, r'at=info method=GET path="/" .* status=200')


def test_a_response_the_dyno_sends_unasked_on_an_idle_connection_is_never_relayed(router):
    # A dyno that writes a response before the next request (response splitting, a stale answer)
    # must not have it taken for that request's answer: the edge of those bytes unpools it.
    assert get(router, "/then-bogus")[2] == b"ok"
    time.sleep(0.8)
    for _ in range(3):
        status, _, body = get(router)
        assert (status, body) == (200, b"web.1 GET /")


def c_counts(router) -> tuple[int, int]:
    workers = router.stats()["workers"]
    return sum(w["plane_requests_c"] for w in workers), sum(w["plane_responses_c"] for w in workers)


def _common_requests(router, dyno) -> list[tuple[bytes, dict[str, str], str]]:
    """Twenty common requests on one kept-alive connection: what the client got, what the dyno saw, the log."""
    got = []
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=10) as s:
        for i in range(20):
            dyno.seen.clear()
            s.sendall(b"GET /one-write?i=%d HTTP/1.1\r\nHost: one.localhost\r\nX-Request-Id: c-%d\r\n"
                      b"X-Forwarded-For: 203.0.113.9\r\n\r\n" % (i, i))
            response = answer(s)
            got.append((response, dyno.seen[-1], log_for(router, f"request_id=c-{i} ")))
    return got


def test_the_common_request_and_response_are_parsed_in_c_with_the_python_paths_bytes(router, dyno, monkeypatch):
    before = c_counts(router)
    fast = _common_requests(router, dyno)
    after = c_counts(router)
    assert after[0] - before[0] == 20 and after[1] - before[1] == 20  # both heads went through cplane
    # The same requests through a router whose plane parses in Python only: the same bytes both ways.
    monkeypatch.setenv("DYNOD_ROUTER_PLANE", "python")
    slow_router = RouterProcess(workers=1, extra=FAST)
    try:
        slow_router.routes({"one": {"dynos": [dyno.route()]}})
        get(slow_router)
        slow_router.logs(0.05)
        reference = _common_requests(slow_router, dyno)
        assert c_counts(slow_router) == (0, 0)
    finally:
        slow_router.stop()
    for (response, seen, line), (ref_response, ref_seen, ref_line) in zip(fast, reference, strict=True):
        assert response == ref_response
        assert response.endswith(b"one write /one-write?i=" + seen["X-Request-Id"][2:].encode())
        assert b"\r\nVia: 1.1 dynod\r\n" in response
        for name in ("Host", "X-Request-Id", "X-Forwarded-For", "X-Forwarded-Proto", "Via"):
            assert seen[name] == ref_seen[name]
        assert seen["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
        assert abs(int(seen["X-Request-Start"]) - int(ref_seen["X-Request-Start"])) < 60_000
        assert re.sub(r"service=\d+ms", "", line) == re.sub(r"service=\d+ms", "", ref_line)


def test_smuggling_through_the_c_path_is_declined_and_refused_by_the_python_path(router):
    """CL+TE, two lengths, bare LF, obs-fold on a kept-alive connection: C declines, parse.py's 400."""
    for attack in (
        b"POST / HTTP/1.1\r\nHost: one.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: one.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"GET / HTTP/1.1\nHost: one.localhost\n\n",
        b"GET / HTTP/1.1\r\nHost: one.localhost\r\nX-A: 1\r\n folded\r\n\r\n",
    ):
        before = c_counts(router)[0]
        with socket.create_connection(("127.0.0.1", router.http_port), timeout=10) as s:
            s.sendall(b"GET /warm HTTP/1.1\r\nHost: one.localhost\r\n\r\n")  # the connection is the plane's
            assert answer(s).endswith(b"web.1 GET /warm")
            s.sendall(attack)
            reply = b""
            while data := s.recv(65536):
                reply += data
        assert reply.startswith(b"HTTP/1.1 400 "), (attack, reply)
        assert c_counts(router)[0] - before == 1  # only the warm-up request was C's


def test_a_head_answer_c_declines_is_read_as_a_heads_by_parse_py_on_a_connection_a_get_used(router):
    # The pooled connection's reader last read a GET's answer; the plane starts it for this request
    # only when C declines the first read: it must then expect no body, or this would wait for 13 bytes.
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=10)
    try:
        before = in_plane(router)
        for method, path in (("GET", "/a"), ("HEAD", "/head-split"), ("GET", "/b")):
            t0 = time.monotonic()
            conn.request(method, path, headers={"Host": "one.localhost"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and time.monotonic() - t0 < 0.9, (method, path)  # well inside H12's 1 s
            if method == "HEAD":
                assert resp.getheader("Content-Length") == "13" and resp.getheader("X-Split") == "yes"
                assert body == b""
            else:
                assert body == b"web.1 GET " + path.encode()
        assert in_plane(router) - before == 2  # a new connection's first request is trio's
    finally:
        conn.close()
