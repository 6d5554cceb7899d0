"""The router fed by a real dynod: no request lost to scaling, restarts, or dynod itself restarting."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import Dynod, write_app

pytestmark = pytest.mark.integration


class Load:
    """Keep-alive GETs through the router from one thread until stopped; every outcome counted."""

    def __init__(self, dynod: Dynod, app: str) -> None:
        self.port = dynod.http_port
        self.host = f"{app}.localhost"
        self.results: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/", headers={"Host": self.host})
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    self.results[body.split()[0].decode()] += 1
                else:
                    self.failures.append(f"{response.status} {body[:80]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def total(self) -> int:
        return sum(self.results.values())


def _router_errors(dynod: Dynod, app: str) -> str:
    return "\n".join(x for x in dynod.logs(app).splitlines() if "at=error" in x or "State changed" in x
                     or "SIGTERM" in x)


@pytest.fixture
def graceful_app(dynod: Dynod, app: str, tmp_path: Path) -> str:
    dynod.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", app)
    dynod.ctl("ps:scale", "web=2", "-a", app)
    dynod.up(app, 2)
    return app


def test_scaling_under_load_fails_no_request(dynod: Dynod, graceful_app: str) -> None:
    with Load(dynod, graceful_app) as load:
        time.sleep(0.5)
        dynod.ctl("ps:scale", "web=3", "-a", graceful_app)
        dynod.up(graceful_app, 3)
        time.sleep(0.5)
        dynod.ctl("ps:scale", "web=1", "-a", graceful_app)
        dynod.wait_for(lambda: len(dynod.dynos(graceful_app)) == 1, what="scale down to 1")
        time.sleep(0.5)
    assert load.failures == [], _router_errors(dynod, graceful_app)
    assert load.total > 50 and len(load.results) >= 2


def test_dynod_restart_under_load_fails_no_request(dynod: Dynod, graceful_app: str) -> None:
    with Load(dynod, graceful_app) as load:
        time.sleep(0.5)
        before = load.total
        dynod.kill9()
        time.sleep(0.5)
        during = load.total
        dynod.start()
        time.sleep(0.5)
    assert load.failures == [], _router_errors(dynod, graceful_app)
    assert during > before  # the router kept serving while dynod was gone
    assert set(load.results) == {"web.1", "web.2"}


def test_router_request_lines_reach_the_app_log(dynod: Dynod, graceful_app: str) -> None:
    with Load(dynod, graceful_app):
        time.sleep(0.3)
    logs = dynod.wait_for(lambda: (text := dynod.logs(graceful_app)) and "dynod[router]: at=info" in text and text,
                          what="a router line")
    line = next(x for x in logs.splitlines() if "dynod[router]: at=info" in x)
    for field in ("method=GET", 'path="/"', f"host={graceful_app}.localhost", "request_id=", "fwd=",
                  "dyno=web.", "connect=", "service=", "status=200", "bytes=", "protocol=http"):
        assert field in line, line
