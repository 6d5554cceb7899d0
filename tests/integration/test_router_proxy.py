"""The router's HTTP behaviour against real dynos (threaded HTTP servers on 127.0.0.1) and real clients."""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest
from cryptography import x509

from dynod.router.testing import (
    Dyno,
    RouterProcess,
    close_silently,
    echo_after_continue,
    process_fds,
    rss_kib,
    self_signed_pair,
    slow,
    stall,
    truncated,
)

pytestmark = pytest.mark.integration

FAST = ["--request-timeout", "1", "--idle-timeout", "1", "--connect-timeout", "0.5", "--boot-timeout", "1.5",
        "--header-timeout", "1", "--keepalive-timeout", "5"]
BIG = 64 * 1024 * 1024  # far more than the router may hold: its RSS must not grow by this


def _download(h):
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    block = b"x" * 65536
    for _ in range(BIG // len(block)):
        h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
    h.wfile.write(b"0\r\n\r\n")


def _upload(h):
    digest = hashlib.sha256()
    total = 0
    while True:
        size = int(h.rfile.readline().split(b";")[0], 16)
        if size == 0:
            h.rfile.readline()
            break
        data = h.rfile.read(size)
        h.rfile.read(2)
        digest.update(data)
        total += len(data)
    body = f"{total} {digest.hexdigest()}".encode()
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _websocket(h):
    h.send_response(101)
    h.send_header("Upgrade", "websocket")
    h.send_header("Connection", "Upgrade")
    h.end_headers()
    h.wfile.flush()
    h.close_connection = True
    while data := h.connection.recv(65536):
        h.connection.sendall(data)


HANDLERS = {"/slow": slow, "/close": close_silently, "/truncated": truncated, "/stall": stall,
            "/download": _download, "/upload": _upload, "/continue": echo_after_continue, "/ws": _websocket}


@pytest.fixture(scope="module")
def dynos():
    ds = [Dyno(f"web.{i}", HANDLERS) for i in (1, 2, 3)]
    yield ds
    for d in ds:
        d.close()


def base_routes(dynos):
    return {"myapp": {"domains": ["www.example.test"], "dynos": [d.route() for d in dynos]},
            "one": {"dynos": [dynos[0].route()]}}


@pytest.fixture(scope="module")
def shared_router():
    r = RouterProcess(workers=2, https=True, extra=FAST)
    yield r
    r.stop()


@pytest.fixture
def router(shared_router, dynos):
    shared_router.routes(base_routes(dynos))
    shared_router.logs(0.05)  # start each test with no stale log lines
    return shared_router


def get(router, path="/", host="myapp.localhost", headers=None, method="GET", body=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def raw(router, data: bytes, timeout=5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def log_for(router, pattern, timeout=3.0):
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        for app, line in router.logs(0.2):
            seen.append((app, line))
            if re.search(pattern, line):
                return app, line
    raise AssertionError(f"no log line matching {pattern!r} in {seen[-5:]}")


def test_random_choice_over_three_dynos_passes_chi_square(router):
    counts = {"web.1": 0, "web.2": 0, "web.3": 0}
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=10)
    n = 900
    for _ in range(n):  # one keep-alive connection: the choice is per request, not per connection
        conn.request("GET", "/", headers={"Host": "myapp.localhost"})
        counts[conn.getresponse().read().split()[0].decode()] += 1
    conn.close()
    expected = n / 3
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 13.82, counts  # p = 0.001 with 2 degrees of freedom


def test_herokus_headers_reach_the_dyno_and_the_log_line_has_herokus_format(router, dynos):
    for d in dynos:
        d.seen.clear()
    before = time.time() * 1000
    status, headers, _ = get(router, "/hello?x=1", host="www.example.test",
                             headers={"X-Request-Id": "my-id-42", "X-Forwarded-For": "203.0.113.7"})
    assert status == 200 and headers["Via"] == "1.1 dynod"
    seen = next(s for d in dynos for s in d.seen)
    assert seen["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http" and seen["X-Forwarded-Port"] == str(router.http_port)
    assert before - 5 <= int(seen["X-Request-Start"]) <= time.time() * 1000 + 5
    assert seen["X-Request-Id"] == "my-id-42" and seen["Via"] == "1.1 dynod"
    app, line = log_for(router, "request_id=my-id-42")
    assert app == "myapp"
    assert re.fullmatch(r'at=info method=GET path="/hello\?x=1" host=www\.example\.test request_id=my-id-42 '
                        r'fwd="127\.0\.0\.1" dyno=web\.[123] connect=\d+ms service=\d+ms status=200 '
                        r'bytes=\d+ protocol=http', line), line


def test_unknown_host_is_a_404_that_names_nothing(router):
    status, _, body = get(router, host="nope.localhost")
    assert status == 404 and b"myapp" not in body and b"127.0.0.1" not in body


@pytest.mark.parametrize("entry,code,desc", [
    ({"dynos": []}, "H14", "No web processes running"),
    ({"dynos": [], "crashed": True}, "H10", "App crashed"),
    ({"dynos": [], "maintenance": True}, "H80", "Maintenance mode"),
])
def test_apps_without_a_running_web_dyno_answer_503(router, dynos, entry, code, desc):
    router.routes({**base_routes(dynos), "down-app": entry})
    status, headers, body = get(router, host="down-app.localhost")
    assert status == 503
    assert (b"maintenance" in body) == (code == "H80")
    app, line = log_for(router, f"code={code}")
    assert app == "down-app" and f'desc="{desc}"' in line and "status=503" in line


def test_refused_connections_retry_another_dyno_then_h21(router, dynos):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    router.routes({**base_routes(dynos), "mixed": {"dynos": [{"name": "web.1", "addr": dead}, dynos[1].route()]},
                   "dead": {"dynos": [{"name": "web.1", "addr": dead}]}})
    assert all(get(router, host="mixed.localhost")[0] == 200 for _ in range(10))
    assert get(router, host="dead.localhost")[0] == 503
    log_for(router, 'code=H21 desc="Backend connection refused"')


def test_a_dyno_that_never_accepts_is_h19(router, dynos):
    # A listener whose accept queue is full drops further SYNs: the connect times out.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(3):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(full.getsockname())
        fillers.append(f)
    time.sleep(0.1)
    try:
        stuck = {"name": "web.1", "addr": f"127.0.0.1:{full.getsockname()[1]}"}
        router.routes({**base_routes(dynos), "stuck": {"dynos": [stuck]}})
        t0 = time.monotonic()
        assert get(router, host="stuck.localhost")[0] == 503
        assert 0.4 < time.monotonic() - t0 < 3
        log_for(router, 'code=H19 desc="Backend connection timeout"')
    finally:
        for f in fillers:
            f.close()
        full.close()


def test_timeouts_h12_h15_and_dyno_failures_h13_h18(router):
    t0 = time.monotonic()
    assert get(router, "/slow", host="one.localhost")[0] == 503
    assert 0.9 < time.monotonic() - t0 < 2.5
    log_for(router, 'code=H12 desc="Request timeout"')
    assert get(router, "/close", host="one.localhost")[0] == 503
    log_for(router, 'code=H13 desc="Connection closed without response"')
    with pytest.raises(http.client.IncompleteRead):
        get(router, "/truncated", host="one.localhost")
    log_for(router, 'code=H18 desc="Server Request Interrupted"')
    with pytest.raises(http.client.IncompleteRead):
        get(router, "/stall", host="one.localhost")
    log_for(router, 'code=H15 desc="Idle connection"')


def test_booting_app_holds_requests_until_a_dyno_is_up_or_h20(router, dynos):
    router.routes({**base_routes(dynos), "boot": {"booting": True, "dynos": []}})
    result = {}
    t = threading.Thread(target=lambda: result.update(r=get(router, host="boot.localhost")))
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # held, not refused
    router.routes({**base_routes(dynos), "boot": {"dynos": [dynos[2].route()]}}, settle=0)
    t.join(5)
    assert result["r"][0] == 200 and result["r"][2].startswith(b"web.3")
    router.routes({**base_routes(dynos), "boot": {"booting": True, "dynos": []}})
    t0 = time.monotonic()
    assert get(router, host="boot.localhost")[0] == 503
    assert time.monotonic() - t0 > 1.4
    log_for(router, 'code=H20 desc="App boot timeout"')


def test_http10_head_pipelining_and_keep_alive(router):
    out = raw(router, b"GET /a HTTP/1.0\r\nHost: one.localhost\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: close" in out and out.endswith(b"web.1 GET /a")
    out = raw(router, b"HEAD /h HTTP/1.1\r\nHost: one.localhost\r\nConnection: close\r\n\r\n")
    assert b"Content-Length: 13" in out and out.endswith(b"\r\n\r\n")
    pipelined = b"".join(b"GET /%d HTTP/1.1\r\nHost: one.localhost\r\n\r\n" % i for i in range(5))
    out = raw(router, pipelined + b"GET /last HTTP/1.1\r\nHost: one.localhost\r\nConnection: close\r\n\r\n")
    assert re.findall(rb"web\.1 GET (/(?:\d|last))", out) == [b"/0", b"/1", b"/2", b"/3", b"/4", b"/last"]


def test_expect_100_continue_with_curl(router):
    out = subprocess.run(["curl", "-s", "-H", "Expect: 100-continue", "--data-binary", "payload",
                          "-H", "Host: one.localhost", f"http://127.0.0.1:{router.http_port}/continue", "-w",
                          " %{http_code}"], capture_output=True, text=True, timeout=10).stdout
    assert out == "payload 201"


def test_websocket_upgrade_passes_bytes_both_ways(router):
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=5) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: one.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101") and b"Upgrade: websocket" in head
        for message in (b"\x81\x05hello", b"\x82\x03abc" * 1000):
            s.sendall(message)
            echoed = b""
            while len(echoed) < len(message):
                echoed += s.recv(65536)
            assert echoed == message
    log_for(router, "status=101")


def test_large_chunked_download_and_upload_stream_without_growing_the_router(router):
    workers = router.worker_pids()
    base = sum(rss_kib(p) for p in workers)
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=30)
    conn.request("GET", "/download", headers={"Host": "one.localhost"})
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked", (resp.status, resp.getheaders())
    total, peak = 0, 0
    while block := resp.read(1 << 20):
        total += len(block)
        if total % (8 << 20) < (1 << 20):
            peak = max(peak, sum(rss_kib(p) for p in workers))
    assert total == BIG

    digest = hashlib.sha256()

    def body():
        block = b"y" * 65536
        for _ in range(BIG // len(block)):
            digest.update(block)
            yield block

    conn.request("POST", "/upload", body=body(), headers={"Host": "one.localhost"}, encode_chunked=True)
    stopped = threading.Event()

    def sample():
        nonlocal peak
        while not stopped.wait(0.05):
            peak = max(peak, sum(rss_kib(p) for p in workers))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        reply = conn.getresponse().read().decode()
    finally:
        stopped.set()
        sampler.join()
    conn.close()
    assert reply == f"{BIG} {digest.hexdigest()}"
    assert peak - base < 24 * 1024, (base, peak)  # KiB: a buffered 64 MiB body would show


def test_tls_with_sni_serves_the_domain_cert_and_the_default_one(router, tmp_path):
    cert_pem, key_pem = self_signed_pair("www.example.test")
    router.send({"type": "certs", "certs": [{"domain": "www.example.test", "cert_pem": cert_pem,
                                             "key_pem": key_pem}]})
    time.sleep(0.3)
    ctx = ssl.create_default_context(cadata=cert_pem)
    with socket.create_connection(("127.0.0.1", router.https_port), timeout=5) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="www.example.test") as s:
            s.sendall(b"GET /tls HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
    assert out.startswith(b"HTTP/1.1 200") and b"GET /tls" in out
    log_for(router, "protocol=https")
    default = ssl.create_default_context()
    default.check_hostname = False
    default.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", router.https_port), timeout=5) as raw_sock:
        with default.wrap_socket(raw_sock, server_hostname="myapp.localhost") as s:
            cert = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
            assert "*.localhost" in cert.subject.rfc4514_string()


def test_bad_input_gets_one_answer_and_leaks_nothing(router):
    workers = router.worker_pids()
    fds_before = [process_fds(p) for p in workers]
    assert raw(router, b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(router, b"GET / HTTP/1.1\r\nHost: one.localhost\r\nX: " + b"a" * 9000 + b"\r\n\r\n"
               ).startswith(b"HTTP/1.1 431")
    assert raw(router, b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test\r\n\r\n"
               ).startswith(b"HTTP/1.1 405")
    t0 = time.monotonic()
    assert raw(router, b"GET / HTTP/1.1\r\nHost: one.loc").startswith(b"HTTP/1.1 408")  # slowloris
    assert time.monotonic() - t0 < 3
    # Clients that vanish mid-body and mid-response.
    with socket.create_connection(("127.0.0.1", router.http_port)) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: one.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    with socket.create_connection(("127.0.0.1", router.http_port)) as s:
        s.sendall(b"GET /download HTTP/1.1\r\nHost: one.localhost\r\n\r\n")
        s.recv(1000)
    time.sleep(1.5)
    assert get(router, host="one.localhost")[0] == 200
    time.sleep(0.3)
    stats = router.stats()
    assert sum(w["connections"] for w in stats["workers"]) == 0
    # Pooled dyno connections may differ; allow for those only.
    pooled = sum(w["dyno_conns_idle"] for w in stats["workers"])
    assert sum(process_fds(p) for p in workers) <= sum(fds_before) + pooled


def test_connections_beyond_the_limit_get_503_and_the_router_keeps_serving(dynos):
    r = RouterProcess(workers=1, extra=["--max-connections", "4", *FAST])
    try:
        r.routes({"one": {"dynos": [dynos[0].route()]}})
        held = [socket.create_connection(("127.0.0.1", r.http_port)) for _ in range(4)]
        for s in held:  # each mid-request: idle connections would be closed to make room instead
            s.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.2)
        assert raw(r, b"GET / HTTP/1.1\r\nHost: one.localhost\r\n\r\n").startswith(b"HTTP/1.1 503")
        for s in held:
            s.close()
        time.sleep(0.3)
        assert get(r, host="one.localhost")[0] == 200
    finally:
        r.stop()


def test_two_host_headers_are_a_400_and_reach_no_dyno(router, dynos):
    # Routed by the first and delivered with the second would let a client reach an app it did not name.
    for head in (b"GET / HTTP/1.1\r\nHost: one.localhost\r\nHost: myapp.localhost\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: one.localhost\r\nX-A: 1\r\nhost: elsewhere.test\r\n\r\n"):
        answer = raw(router, head)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert b"Connection: close" in answer
    assert get(router, host="one.localhost")[0] == 200


def test_idle_connections_close_at_the_header_timeout_and_requests_still_succeed(dynos):
    # Every slot held by a connection that never sends a byte: before, they sat out the 5 s
    # keep-alive window and a real request got a 503; now the oldest makes room for a request at
    # once, and the rest go at the 1 s header timeout.
    r = RouterProcess(workers=1, extra=["--max-connections", "200", *FAST])
    held: list[socket.socket] = []
    try:
        r.routes({"one": {"dynos": [dynos[0].route()]}})
        t0 = time.monotonic()
        held = [socket.create_connection(("127.0.0.1", r.http_port)) for _ in range(200)]
        time.sleep(0.3)
        assert sum(w["connections"] for w in r.stats()["workers"]) == 200
        assert get(r, host="one.localhost")[0] == 200  # served while the worker is full
        for s in held:
            s.settimeout(3)
        closed_at = []
        for s in held:
            assert s.recv(100) == b""  # closed quietly: nothing was asked, so nothing is answered
            closed_at.append(time.monotonic() - t0)
        assert max(closed_at) < 2.5, max(closed_at)  # header timeout 1 s (+ watchdog period), not 5 s
        assert get(r, host="one.localhost")[0] == 200
        stats = r.stats()["workers"][0]
        assert stats["connections"] == 0 and stats["codes"].get("evicted_idle") == 1, stats
    finally:
        for s in held:
            s.close()
        r.stop()
