"""Long Content-Length bodies go from the dyno to a plain-HTTP client by splice(2): the bytes, the
rules (H15, H18, a client that leaves) and the connections afterwards must be as for any body."""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import ssl
import time

import pytest

from dynod.router.testing import Dyno, RouterProcess, process_fds

pytestmark = pytest.mark.integration

FAST = ["--idle-timeout", "1", "--request-timeout", "2", "--header-timeout", "2", "--keepalive-timeout", "5"]
LONG = 4 * 1024 * 1024 + 123  # well above the splice threshold, and not a multiple of any buffer
PATTERN = bytes(range(256)) * 4096  # 1 MiB of every byte value: a reordered or lost piece shows


def _body(n: int) -> bytes:
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def _long(h):
    body = _body(LONG)
    h.send_response(200)
    h.send_header("Content-Length", str(LONG))
    h.end_headers()
    for i in range(0, LONG, 100_000):  # many small writes: the router sees the body trickle in
        h.wfile.write(body[i:i + 100_000])


def _cut_short(h):
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % LONG + _body(300_000))
    h.wfile.flush()
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def _stall(h):
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % LONG + _body(300_000))
    h.wfile.flush()
    time.sleep(3)
    h.close_connection = True


@pytest.fixture(scope="module")
def setup():
    dyno = Dyno("web.1", {"/long": _long, "/cut": _cut_short, "/stall": _stall})
    router = RouterProcess(workers=1, https=True, extra=FAST)
    try:
        router.routes({"a": {"dynos": [dyno.route()]}})
        yield router, dyno
    finally:
        router.stop()
        dyno.close()


def _logs_matching(router, pattern, timeout=3.0):
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        seen += [line for _app, line in router.logs(0.2)]
        found = [line for line in seen if re.search(pattern, line)]
        if found:
            return found
    raise AssertionError(f"no log line matching {pattern!r} in {seen[-5:]}")


def test_long_bodies_arrive_whole_and_both_connections_carry_on(setup):
    router, dyno = setup
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=10)
    try:
        for _ in range(3):  # the same client connection, and the pooled dyno connection, each time
            conn.request("GET", "/long", headers={"Host": "a.localhost"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Content-Length") == str(LONG)
            assert hashlib.sha256(resp.read()).digest() == hashlib.sha256(_body(LONG)).digest()
        conn.request("GET", "/short", headers={"Host": "a.localhost"})
        assert conn.getresponse().read() == b"web.1 GET /short"
    finally:
        conn.close()
    _logs_matching(router, rf'path="/long".* status=200 bytes={LONG} ')
    stats = router.stats()["workers"][0]
    assert stats["bodies_spliced"] == 3, stats  # the short one went the ordinary way
    assert stats["dyno_conns_reused"] >= 3, stats  # the response reader was renewed after each splice


def test_a_dyno_that_cuts_a_long_body_short_is_h18_and_one_that_stalls_is_h15(setup):
    router, _dyno = setup
    for path, code in (("/cut", "H18"), ("/stall", "H15")):
        conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=10)
        conn.request("GET", path, headers={"Host": "a.localhost"})
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
        conn.close()
        _logs_matching(router, rf"code={code} .*path=\"{path}\"")


def test_a_client_leaving_mid_body_costs_nothing_and_the_router_serves_on(setup):
    router, _dyno = setup
    worker = router.worker_pids()[0]
    before = process_fds(worker)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", router.http_port)) as s:
            s.sendall(b"GET /long HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    _logs_matching(router, r'code=H27 .*path="/long"')
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=10)
    conn.request("GET", "/long", headers={"Host": "a.localhost"})
    assert len(conn.getresponse().read()) == LONG
    conn.close()
    time.sleep(0.2)
    # No kernel pipe or socket left behind by the five transfers cut off mid-splice.
    assert process_fds(worker) <= before + 1


def test_a_tls_client_gets_the_same_bytes_through_the_ordinary_relay(setup):
    router, _dyno = setup
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", router.https_port, timeout=10, context=ctx)
    try:
        spliced = router.stats()["workers"][0]["bodies_spliced"]
        conn.request("GET", "/long", headers={"Host": "a.localhost"})
        assert hashlib.sha256(conn.getresponse().read()).digest() == hashlib.sha256(_body(LONG)).digest()
        assert router.stats()["workers"][0]["bodies_spliced"] == spliced  # TLS: no socket to splice to
    finally:
        conn.close()
