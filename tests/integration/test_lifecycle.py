"""The dyno lifecycle under load: restarts of every kind lose no request, through the real router."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import Dynod, write_app

pytestmark = pytest.mark.integration

# The fixture's web app, but each boot answers with a token of its own: the test sees which boot served.
BOOT_APP = r'''
import http.server, os, secrets, signal, threading
BOOT = secrets.token_hex(4)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['DYNO']} {BOOT}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
'''
PROCFILE = "web: python3 boot.py\n"


class Load:
    """A bounded request loop: a few threads, one request at a time each, every answer counted."""

    def __init__(self, dynod: Dynod, app: str, threads: int = 3) -> None:
        self.dynod, self.app, self.threads = dynod, app, threads
        self.results: Counter[str] = Counter()
        self.failures: list[str] = []
        self.boots: list[str] = []  # the boot token of each answer, in order
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _one(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.dynod.http_port, timeout=90)
        try:
            conn.request("GET", "/", headers={"Host": f"{self.app}.localhost"})
            response = conn.getresponse()
            body = response.read().decode(errors="replace")
            if response.status == 200:
                with self._lock:
                    self.boots.append(body.split()[-1])
                return "200"
            return f"{response.status} {body.strip()[:80]}"
        except OSError as exc:
            return f"error {exc}"
        finally:
            conn.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            outcome = self._one()
            with self._lock:
                self.results[outcome.split()[0]] += 1
                if outcome != "200":
                    self.failures.append(outcome)

    @contextmanager
    def running(self) -> Iterator[Load]:
        workers = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(timeout=120)

    @property
    def total(self) -> int:
        return sum(self.results.values())


def _web_releases(dynod: Dynod, app: str) -> set[int]:
    return {d["release"]["version"] for d in dynod.dynos(app) if d["type"] == "web" and d["state"] == "up"}


def _current(dynod: Dynod, app: str) -> int:
    with dynod.client() as client:
        return int(client.get_release(app)["version"])


def _all_on_current(dynod: Dynod, app: str, count: int) -> bool:
    dynos = [d for d in dynod.dynos(app) if d["type"] == "web"]
    current = _current(dynod, app)
    return len(dynos) == count and all(d["state"] == "up" and d["release"]["version"] == current for d in dynos)


def _replaced(load: Load, old: set[str], count: int) -> bool:
    """The last answers all came from boots that were not serving before, ``count`` of them."""
    recent = load.boots[-30:]
    return len(recent) == 30 and not old & set(recent) and len(set(recent)) == count


def _settle(load: Load, seconds: float = 1.0) -> None:
    """Let the loop run on the new dynos for a moment: a late failure counts too."""
    before = load.total
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or load.total < before + 20:
        time.sleep(0.05)


@pytest.fixture
def served_app(dynod: Dynod, app: str, tmp_path: Path) -> str:
    dynod.ctl("deploy", str(write_app(tmp_path / "src", PROCFILE, {"boot.py": BOOT_APP})), "-a", app)
    dynod.ctl("ps:scale", "web=2", "-a", app)
    dynod.up(app, 2)
    return app


def _changes(dynod: Dynod, app: str, tmp_path: Path) -> dict[str, Callable[[], None]]:
    return {
        "config:set": lambda: dynod.ctl("config:set", f"GREETING=g{time.monotonic_ns()}", "-a", app),
        "ps:restart": lambda: dynod.ctl("ps:restart", "-a", app),
        "ps:restart web": lambda: dynod.ctl("ps:restart", "web", "-a", app),
        "rollback": lambda: dynod.ctl("releases:rollback", "-a", app),
        "deploy": lambda: dynod.ctl("deploy", str(write_app(tmp_path / f"v{time.monotonic_ns()}", PROCFILE,
                                                            {"boot.py": BOOT_APP})), "-a", app),
    }


@pytest.mark.parametrize("change", ["config:set", "ps:restart", "ps:restart web", "rollback", "deploy"])
def test_no_request_is_lost_while_the_web_dynos_are_replaced(dynod: Dynod, served_app: str, tmp_path: Path,
                                                              change: str) -> None:
    app = served_app
    do = _changes(dynod, app, tmp_path)[change]
    if change == "rollback":  # something to roll back to that has code: v2 (v1 has none)
        dynod.ctl("config:set", "GREETING=before", "-a", app)
        dynod.wait_for(lambda: _all_on_current(dynod, app, 2), what="v3 up")
    load = Load(dynod, app)
    with load.running():
        _settle(load, 0.5)
        for _round in range(2):
            old = set(load.boots)
            do()
            dynod.wait_for(lambda old=old: _replaced(load, old, 2) and _all_on_current(dynod, app, 2),
                           timeout=60, what=f"both web dynos replaced after {change}")
            _settle(load)
    assert load.total > 50, load.results
    assert load.failures == [], (f"{len(load.failures)} of {load.total} failed after {change}: "
                                 f"{load.failures[:3]}; router codes: {_router_codes(dynod, app)}")


def _router_codes(dynod: Dynod, app: str) -> Counter[str]:
    lines = dynod.ctl("logs", "-a", app, "-n", "1500", "--ps", "router").stdout.splitlines()
    return Counter(word for line in lines for word in line.split() if word.startswith("code="))
