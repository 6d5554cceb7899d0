"""Metrics from a real dynod: a known distribution of response times and statuses through the real
router, read back as percentiles and counts from the API, `dynoctl metrics` and /metrics."""

from __future__ import annotations

import http.client
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.metrics import RELATIVE_ERROR

from .conftest import Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration

SLOW_APP = r'''
import http.server, os, time, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else Nagle and delayed ACKs add 40 ms to every answer
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        time.sleep(int(q.get("ms", ["0"])[0]) / 1000)
        body = b"ok\n"
        self.send_response(int(q.get("status", ["200"])[0]))
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
'''

# 200 requests: ranks 1-100 sleep 20 ms, 101-190 100 ms, 191-198 300 ms, 199-200 600 ms, so the
# nearest-rank p50 is a 20 ms request, p95 a 100 ms one, p99 a 300 ms one and the max 600 ms.
DISTRIBUTION = [20] * 100 + [100] * 90 + [300] * 8 + [600] * 2
STATUSES = [200] * 170 + [201] * 10 + [302] * 5 + [404] * 10 + [500] * 5


def with_runtime_metrics(d: Dynod, interval: float = 1.0) -> None:
    """The shared test config turns runtime metrics off; these tests want memory samples, so the
    dynod is restarted (kill -9, as an upgrade would; its spawner and router stay) with them on."""
    text = d.config.read_text()
    assert "metrics_interval = 0\n" in text
    d.config.write_text(text.replace("metrics_interval = 0\n", f"metrics_interval = {interval}\n"))
    d.kill9()
    d.start()


@pytest.fixture(scope="module")
def metrics_dynod() -> Iterator[Dynod]:
    # dynos_extra lands in [dynos]; the tables after it are this dynod's own settings.
    with running_dynod(dynos_extra="[metrics]\nprometheus = true\n") as d:
        with_runtime_metrics(d)
        yield d


def _send(port: int, host: str, jobs: list[tuple[int, int]], failures: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for ms, status in jobs:
        try:
            conn.request("GET", f"/?ms={ms}&status={status}", headers={"Host": host})
            response = conn.getresponse()
            body = response.read()
            if response.status != status:
                # The body says who answered (the router's error page or the app), for a flake's trail.
                failures.append(f"{status} -> {response.status}: {body[:200]!r} at {time.time():.3f}")
        except (OSError, http.client.HTTPException) as exc:
            failures.append(repr(exc))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()


def test_known_traffic_gives_its_percentiles_and_counts(metrics_dynod: Dynod, tmp_path: Path) -> None:
    d = metrics_dynod
    app = f"m{random.getrandbits(32):08x}"
    d.ctl("apps:create", app)
    try:
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "web: python3 slow.py\n",
                                                    {"slow.py": SLOW_APP})), "-a", app)
        d.ctl("ps:scale", "web=2", "-a", app)
        d.up(app, 2)
        # All of it inside one minute, so one point holds the whole distribution.
        if time.time() % 60 > 40:
            time.sleep(61 - time.time() % 60)
        jobs = list(zip(DISTRIBUTION, STATUSES, strict=True))
        random.Random(7).shuffle(jobs)
        failures: list[str] = []
        threads = [threading.Thread(target=_send, args=(d.http_port, f"{app}.localhost", jobs[i::4], failures))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not failures, f"{failures[:5]}\n{d.logs(app)[-4000:]}\n{d.log_tail()}"

        def counted() -> dict | None:
            with d.client() as client:
                data = client.get_metrics(app, "web", "1h")
            points = [p for p in data["points"] if p["requests"]]
            return data if sum(p["requests"] for p in points) >= 200 else None

        data = d.wait_for(counted, timeout=15, what="200 requests in the metrics")
        points = [p for p in data["points"] if p["requests"]]
        assert len(points) == 1, [p["t"] for p in points]
        point = points[0]
        assert point["status"] == {"1xx": 0, "2xx": 180, "3xx": 5, "4xx": 10, "5xx": 5}
        assert point["errors"] == {}
        r = point["response_ms"]
        # The store's percentiles against the exact nearest-rank ones of the service times the
        # router logged for these 200 requests: on a busy host a 20 ms sleep can be served in
        # 80, so the figures to match are the ones measured, and the sleeps only bound them below.
        served = sorted(int(ms) for ms in re.findall(r"service=(\d+)ms status=\d{3}", d.logs(app)))
        assert len(served) == 200, len(served)
        for key, rank, slept in (("p50", 100, 20), ("p95", 190, 100), ("p99", 198, 300), ("max", 200, 600)):
            exact = served[rank - 1]
            assert exact >= slept, (key, exact)
            assert exact * (1 - RELATIVE_ERROR) - 1 <= r[key] <= exact * (1 + RELATIVE_ERROR) + 1, (key, exact, r)
        kinds = [e["kind"] for e in data["events"]]
        assert "deploy" in kinds and "scale" in kinds, data["events"]

        # runtime samples (every second here): each web dyno's memory against its 512 MB quota
        def sampled() -> dict | None:
            with d.client() as client:
                points = [p for p in client.get_metrics(app, "web", "1h")["points"] if p["memory"]]
            return points[-1]["memory"] if points and points[-1]["memory"]["dynos"] == 2 else None

        memory = d.wait_for(sampled, timeout=15, what="memory samples of both web dynos")
        assert memory["quota"] == 512 * 1024 * 1024 and set(memory["per_dyno"]) == {"web.1", "web.2"}
        assert 1024 * 1024 < memory["rss_max"] < memory["quota"] and memory["swap_max"] >= 0
        assert 0 < memory["quota_pct_max"] < 100

        # H14: no web dynos; counted by code and in 5xx
        d.ctl("ps:scale", "web=0", "-a", app)
        d.wait_for(lambda: not [x for x in d.dynos(app) if x["type"] == "web"], what="web dynos gone")
        conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=30)
        for _ in range(3):
            conn.request("GET", "/", headers={"Host": f"{app}.localhost"})
            assert conn.getresponse().read() is not None
        conn.close()

        def h14() -> int:
            with d.client() as client:
                points = client.get_metrics(app, "web", "1h")["points"]
            return sum(p["errors"].get("H14", 0) for p in points)

        assert d.wait_for(lambda: h14() == 3 and 3, timeout=15, what="3 H14 errors") == 3

        out = d.ctl("metrics", "-a", app, "--since", "1h").stdout
        assert "203 requests" in out and "H14 3" in out and re.search("[▁▂▃▄▅▆▇█]", out), out
        assert re.search(r"Memory RSS\s+\d+\.\dMB peak", out), out
        bad = d.ctl("metrics", "-a", app, "--since", "1y", check=False)
        assert bad.returncode == 1 and "use a span from 1m to 7d" in bad.stderr and "Traceback" not in bad.stderr

        text = _get_text(d, "/metrics")
        pattern = rf'dynod_router_requests_total{{app="{app}",type="web",status="(\dxx)"}} (\d+)'
        counts = dict(re.findall(pattern, text))
        assert counts == {"2xx": "180", "3xx": "5", "4xx": "10", "5xx": "8"}, text[:2000]
        assert f'dynod_errors_total{{app="{app}",type="web",code="H14"}} 3' in text
        assert f'dynod_dyno_memory_bytes{{app="{app}",dyno="web.1",kind="quota"}} 536870912' in text
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
    # destroyed: its figures went with it, and a new app of the name starts empty
    d.ctl("apps:create", app)
    try:
        with d.client() as client:
            data = client.get_metrics(app, "web", "1h")
        assert all(p["requests"] == 0 for p in data["points"]) and data["events"] == []
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


def _get_text(d: Dynod, path: str) -> str:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(d.socket))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: dynod\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def test_crashes_restarts_and_their_events_are_counted(metrics_dynod: Dynod, tmp_path: Path) -> None:
    d = metrics_dynod
    app = f"c{random.getrandbits(32):08x}"
    d.ctl("apps:create", app)
    try:
        procfile = "web: python3 slow.py\nworker: python3 -c 'import time; time.sleep(0.5); raise SystemExit(3)'\n"
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", procfile, {"slow.py": SLOW_APP})), "-a", app)
        d.ctl("ps:scale", "web=1", "worker=1", "-a", app)
        d.up(app, 1)

        def worker_figures() -> dict | None:
            with d.client() as client:
                data = client.get_metrics(app, "worker", "1h")
            crashes = sum(p["crashes"] for p in data["points"])
            restarts = sum(p["restarts"] for p in data["points"])
            return data if crashes >= 2 and restarts >= 1 else None

        data = d.wait_for(worker_figures, timeout=30, what="the worker's crashes and restarts")
        assert "worker" in data["types"] and "crash" in [e["kind"] for e in data["events"]]
        assert all(p["requests"] == 0 for p in data["points"])  # the router's figures are web's

        d.ctl("ps:restart", "web", "-a", app)

        def restarted() -> bool:
            with d.client() as client:
                web = client.get_metrics(app, "web", "1h")
            return any(e["kind"] == "restart" and "web.1" in e["text"] for e in web["events"]) and \
                sum(p["restarts"] for p in web["points"]) >= 1

        d.wait_for(restarted, timeout=15, what="the web restart counted")
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
