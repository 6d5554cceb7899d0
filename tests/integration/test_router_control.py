"""The router as a process beside dynod: started detached, re-attached, fed routes under load, stopped."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import trio

from dynod.errors import UserError
from dynod.router import RouterControl
from dynod.router.routes import AppRoute
from dynod.router.testing import Dyno, RouterProcess

pytestmark = pytest.mark.integration


class Load:
    """Client threads sending keep-alive requests until stopped; every non-200 is a failure."""

    def __init__(self, port: int, host: str, threads: int = 4) -> None:
        self.port, self.host = port, host
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/", headers={"Host": self.host})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


@pytest.fixture
def dynos():
    ds = [Dyno(f"web.{i}") for i in (1, 2, 3)]
    yield ds
    for d in ds:
        d.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_route_changes_under_load_fail_no_request(dynos):
    router = RouterProcess(workers=2)
    try:
        routes = [d.route() for d in dynos]
        router.routes({"myapp": {"dynos": routes}})
        load = Load(router.http_port, "myapp.localhost")
        try:
            for i in range(30):  # dynos come and go, as a deploy or a scale would do it
                subset = [routes[i % 3], routes[(i + 1) % 3]] if i % 2 else routes
                router.routes({"myapp": {"dynos": subset}}, settle=0.05)
        finally:
            load.stop()
        assert load.failures == [] and load.ok > 100
        assert all(d.hits for d in dynos)
    finally:
        router.stop()


def test_a_killed_worker_is_replaced_and_serving_continues(dynos):
    router = RouterProcess(workers=2)
    try:
        router.routes({"myapp": {"dynos": [dynos[0].route()]}})
        victim = router.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = router.stats()
            if stats["worker_restarts"] == 1 and len(stats["workers"]) == 2:
                break
            time.sleep(0.1)
        assert victim not in router.worker_pids() and len(router.worker_pids()) == 2
        for _ in range(20):  # the replacement got the routes it missed
            conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=5)
            conn.request("GET", "/", headers={"Host": "myapp.localhost"})
            assert conn.getresponse().status == 200
            conn.close()
    finally:
        router.stop()


def test_bad_control_messages_are_refused_and_the_routes_stay(dynos):
    router = RouterProcess(workers=1)
    try:
        router.routes({"myapp": {"dynos": [dynos[0].route()]}})
        router.send({"type": "routes", "apps": {"myapp": {"dynos": [{"name": "web.1", "addr": "nowhere"}]}}})
        router.conn.sendall(b"this is not json\n")
        errors = [m for m in router.messages(1.0) if m["type"] == "error"]
        assert len(errors) == 2 and "IPv4:PORT" in errors[0]["message"]
        conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=5)
        conn.request("GET", "/", headers={"Host": "myapp.localhost"})
        assert conn.getresponse().status == 200
    finally:
        router.stop()


@pytest.fixture
def control_dir():
    d = Path(tempfile.mkdtemp(prefix="dynod-router-ctl-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _argv(d: Path, port: int = 0) -> list[str]:
    return [sys.executable, "-m", "dynod.router", "--control", str(d / "router.sock"),
            "--http", f"127.0.0.1:{port}", "--state-dir", str(d / "state"), "--workers", "2"]


async def test_router_outlives_its_dynod_and_takes_it_back_without_failing_a_request(dynos, control_dir):
    first = await RouterControl.connect_or_start(control_path=control_dir / "router.sock",
                                                 argv=_argv(control_dir))
    router_pid = first.pid
    try:
        assert os.getsid(router_pid) != os.getsid(0)  # its own session: a dynod kill -9 spares it
        await first.push_routes([AppRoute.from_wire("myapp", {"dynos": [d.route() for d in dynos]})])
        stats = await first.statistics()
        port = int(stats["listen"][0].rsplit(":", 1)[1])
        await trio.sleep(0.2)
        load = Load(port, "myapp.localhost", threads=3)
        try:
            await trio.sleep(0.5)
            await first.aclose()  # dynod goes away (as with kill -9: the socket just closes)
            await trio.sleep(1.0)
            detached = await first.statistics()
            assert not detached["attached"] and detached["log_buffered"] > 0
            second = await RouterControl.connect_or_start(control_path=control_dir / "router.sock",
                                                          argv=_argv(control_dir))
            assert second.pid == router_pid  # found the running router, started nothing
            await second.push_routes([AppRoute.from_wire("myapp", {"dynos": [d.route() for d in dynos]})])
            lines = []
            with trio.move_on_after(2):
                async for app, line in second.receive_logs():
                    lines.append((app, line))
                    if len(lines) >= 10:
                        break
            await trio.sleep(0.5)
        finally:
            await trio.to_thread.run_sync(load.stop)
        assert load.failures == [] and load.ok > 50
        assert len(lines) >= 10 and all(app == "myapp" and line.startswith("at=info ") for app, line in lines)
        workers = [w["pid"] for w in (await second.statistics())["workers"]]
        await second.stop_router()
        assert not _alive(router_pid) and not any(_alive(p) for p in workers)
        assert not (control_dir / "router.sock").exists()
    finally:
        if _alive(router_pid):
            os.kill(router_pid, signal.SIGKILL)


async def test_a_router_that_cannot_start_says_why(control_dir):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(UserError, match="Cannot listen on 127.0.0.1"):
            await RouterControl.connect_or_start(control_path=control_dir / "router.sock",
                                                 argv=_argv(control_dir, taken.getsockname()[1]))
    finally:
        taken.close()


async def test_push_refuses_bad_routes_and_certs_before_sending(control_dir):
    control = await RouterControl.connect_or_start(control_path=control_dir / "router.sock",
                                                   argv=_argv(control_dir))
    try:
        with pytest.raises(UserError, match="policy"):
            AppRoute.from_wire("a", {"policy": "fastest"})  # a route is checked when it is made
        with pytest.raises(TypeError, match="takes AppRoutes"):
            await control.push_routes({"a": {"policy": "random"}})  # type: ignore[arg-type]  # the old form
        with pytest.raises(UserError, match="not a PEM certificate"):
            await control.push_certs([{"domain": "a.test", "cert_pem": "x", "key_pem": "y"}])
    finally:
        await control.stop_router()


def _open_kept_alive(port: int, count: int) -> list[http.client.HTTPConnection]:
    """``count`` clients connected at once (one burst of connects), each with one request answered."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(count)]
    for conn in conns:
        conn.connect()
    for conn in conns:
        conn.request("GET", "/", headers={"Host": "myapp.localhost"})
    for conn in conns:
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    return conns


def test_a_burst_of_keepalive_clients_spreads_over_the_workers(dynos):
    # Without the shared counts the worker that woke first drained the burst (measured 95 / 5), and
    # kept-alive clients stay where they land.
    router = RouterProcess(workers=2)
    conns: list[http.client.HTTPConnection] = []
    try:
        router.routes({"myapp": {"dynos": [dynos[0].route()]}})
        for _ in range(3):
            conns += _open_kept_alive(router.http_port, 32)
        held = sorted(w["connections"] for w in router.stats()["workers"])
        assert sum(held) == 96 and held[0] >= 36, held  # an even split is 48 / 48
    finally:
        for conn in conns:
            conn.close()
        router.stop()


def test_a_burst_of_tls_clients_spreads_over_the_workers(dynos):
    # A TLS connection is a client only once its handshake is done: counted from its accept, else a
    # burst of TLS connects went to whichever worker woke first.
    import socket
    import ssl

    router = RouterProcess(workers=2, https=True)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the router's self-signed default certificate
    conns: list[http.client.HTTPSConnection] = []
    try:
        router.routes({"myapp": {"dynos": [dynos[0].route()]}})
        workers = router.worker_pids()
        for _ in range(3):
            for pid in workers:  # the connects wait in the queue together: one burst for the workers
                os.kill(pid, signal.SIGSTOP)
            try:
                raw = [socket.create_connection(("127.0.0.1", router.https_port), timeout=10) for _ in range(32)]
            finally:
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
            for sock in raw:
                conn = http.client.HTTPSConnection("127.0.0.1", router.https_port, timeout=10, context=context)
                conn.sock = context.wrap_socket(sock, server_hostname="myapp.localhost")
                conns.append(conn)
            for conn in conns[-32:]:
                conn.request("GET", "/", headers={"Host": "myapp.localhost"})
                response = conn.getresponse()
                response.read()
                assert response.status == 200
        held = sorted(w["connections"] for w in router.stats()["workers"])
        assert sum(held) == 96 and held[0] >= 40, held  # an even split is 48 / 48; a round to one worker is 32 / 64
    finally:
        for conn in conns:
            conn.close()
        router.stop()


def test_a_hung_or_dead_worker_does_not_stop_its_peer_accepting(dynos):
    router = RouterProcess(workers=2)
    conns: list[http.client.HTTPConnection] = []
    try:
        router.routes({"myapp": {"dynos": [dynos[0].route()]}})
        hung, other = router.worker_pids()
        os.kill(hung, signal.SIGSTOP)  # it keeps its slot's count (0) and accepts nothing
        try:
            conns += _open_kept_alive(router.http_port, 200)  # a few holds, then the peer takes them all
        finally:
            os.kill(hung, signal.SIGCONT)
        for conn in conns:
            conn.close()
        conns = []
        os.kill(hung, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and router.stats()["worker_restarts"] < 1:
            time.sleep(0.05)
        conns += _open_kept_alive(router.http_port, 20)  # served by the survivor or the replacement
    finally:
        for conn in conns:
            conn.close()
        router.stop()

