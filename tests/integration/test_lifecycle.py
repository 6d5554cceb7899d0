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

from .conftest import VENV_BIN, Dynod, write_app

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
                                 f"{load.failures[:3]}; router codes: {_router_codes(dynod, app)}\n"
                                 f"{dynod.log_tail()}")


def _router_codes(dynod: Dynod, app: str) -> str:
    """The router's error codes, the lines that carry them and the dynos' own lines, for a failure."""
    lines = dynod.ctl("logs", "-a", app, "-n", "1500", "--ps", "router").stdout.splitlines()
    errors = [line for line in lines if "code=" in line]
    codes = Counter(word for line in errors for word in line.split() if word.startswith("code="))
    dynos = dynod.ctl("logs", "-a", app, "-n", "200", "--ps", "web").stdout
    return f"{dict(codes)}\n" + "\n".join(errors[:5]) + "\n" + dynos


# -- preboot ----------------------------------------------------------------------------------------

class UpWatch:
    """Polls ps while a change runs: the fewest web dynos up at any moment."""

    def __init__(self, dynod: Dynod, app: str) -> None:
        self.dynod, self.app = dynod, app
        self.fewest_up = 1 << 30
        self._stop = threading.Event()

    def _loop(self) -> None:
        while not self._stop.is_set():
            up = [d for d in self.dynod.dynos(self.app) if d["type"] == "web" and d["state"] == "up"]
            self.fewest_up = min(self.fewest_up, len(up))
            time.sleep(0.02)

    @contextmanager
    def running(self) -> Iterator[UpWatch]:
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=30)


def _features(dynod: Dynod, app: str) -> str:
    return dynod.ctl("features", "-a", app).stdout


def test_preboot_keeps_the_old_web_dynos_up_until_the_new_ones_are(dynod: Dynod, served_app: str) -> None:
    app = served_app
    assert "[ ] preboot" in _features(dynod, app)
    assert "Enabling preboot for" in dynod.ctl("features:enable", "preboot", "-a", app).stdout
    assert "[+] preboot" in _features(dynod, app)
    load = Load(dynod, app)
    watch = UpWatch(dynod, app)
    with load.running(), watch.running():
        _settle(load, 0.5)
        old = set(load.boots)
        dynod.ctl("config:set", "GREETING=prebooted", "-a", app)
        dynod.wait_for(lambda: _replaced(load, old, 2) and _all_on_current(dynod, app, 2), timeout=60,
                       what="both web dynos replaced with preboot")
        _settle(load)
    assert load.failures == [], (f"{len(load.failures)} of {load.total} failed: {load.failures[:3]}; "
                                 f"router codes: {_router_codes(dynod, app)}")
    assert watch.fewest_up >= 2, "with preboot the app never had fewer web dynos up than its formation"
    # Without preboot, Heroku's order: the old ones go at once, the new ones boot (requests are held).
    dynod.ctl("features:disable", "preboot", "-a", app)
    assert "[ ] preboot" in _features(dynod, app)
    watch = UpWatch(dynod, app)
    with watch.running():
        dynod.ctl("config:set", "GREETING=plain", "-a", app)
        dynod.wait_for(lambda: _all_on_current(dynod, app, 2), timeout=60, what="replaced without preboot")
    assert watch.fewest_up < 2


def test_preboot_ps_restart_replaces_the_web_dynos_new_before_old(dynod: Dynod, served_app: str) -> None:
    """ps:restart with preboot, as a new release: no moment with fewer web dynos up, no request lost."""
    app = served_app
    dynod.ctl("features:enable", "preboot", "-a", app)
    load = Load(dynod, app)
    watch = UpWatch(dynod, app)
    with load.running(), watch.running():
        _settle(load, 0.5)
        for args in (("ps:restart",), ("ps:restart", "web")):
            old = set(load.boots)
            dynod.ctl(*args, "-a", app)
            dynod.wait_for(lambda old=old: _replaced(load, old, 2) and _all_on_current(dynod, app, 2),
                           timeout=60, what=f"both web dynos replaced after {' '.join(args)} with preboot")
            _settle(load)
    assert load.total > 50, load.results
    assert load.failures == [], (f"{len(load.failures)} of {load.total} failed: {load.failures[:3]}; "
                                 f"router codes: {_router_codes(dynod, app)}")
    assert watch.fewest_up >= 2, "with preboot ps:restart never leaves fewer web dynos up than the formation"
    assert "Stopping all processes with SIGTERM" in dynod.logs(app)


def test_preboot_a_release_that_never_comes_up_leaves_the_old_dynos_serving(
        dynod: Dynod, served_app: str, tmp_path: Path) -> None:
    app = served_app
    dynod.ctl("features:enable", "preboot", "-a", app)
    before = {d["name"]: d["release"]["version"] for d in dynod.dynos(app)}
    broken = write_app(tmp_path / "broken", "web: sh -c 'echo no port today; exit 1'\n")
    load = Load(dynod, app)
    with load.running():
        dynod.ctl("deploy", str(broken), "-a", app)
        dynod.wait_for(lambda: "keeps serving" in dynod.ctl("logs", "-a", app, "--ps", "web", "--source", "dynod",
                                                            "-n", "1500").stdout,
                       timeout=30, what="the preboot failure said in the log")
        time.sleep(2)  # a few crash-restarts of the new release while the old one serves
    assert load.total > 20 and load.failures == [], load.failures[:3]
    dynos = dynod.dynos(app)
    up = {d["name"]: d["release"]["version"] for d in dynos if d["state"] == "up"}
    assert up == before, dynos  # the old release still serves both slots
    assert _current(dynod, app) > max(before.values())  # released, but its web dynos never came up
    # A good release then replaces the old dynos and the crashed attempts alike.
    dynod.ctl("deploy", str(write_app(tmp_path / "good", PROCFILE, {"boot.py": BOOT_APP})), "-a", app)
    dynod.wait_for(lambda: _all_on_current(dynod, app, 2), timeout=60, what="the good release up")


# -- health checks ----------------------------------------------------------------------------------

# Answers / at once but /health only after SLOW_START seconds, and /health at all only while alive.
HEALTH_APP = r'''
import http.server, os, secrets, signal, threading, time
BOOT, BORN = secrets.token_hex(4), time.monotonic()
SLOW_START = float(os.environ.get("SLOW_START", "0"))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path != "/health" or time.monotonic() - BORN >= SLOW_START
        body = f"{os.environ['DYNO']} {BOOT}\n".encode()
        self.send_response(200 if ok else 503); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
'''


@pytest.fixture
def health_app(dynod: Dynod, app: str, tmp_path: Path) -> str:
    dynod.ctl("deploy", str(write_app(tmp_path / "src", "web: python3 health.py\n", {"health.py": HEALTH_APP})),
              "-a", app)
    dynod.ctl("ps:scale", "web=2", "-a", app)
    dynod.up(app, 2)
    return app


def test_a_booting_dyno_joins_the_routes_only_once_its_health_check_passes(dynod: Dynod, health_app: str) -> None:
    app = health_app
    dynod.ctl("healthcheck:set", "--path", "/health", "--timeout", "0.5", "--interval", "0.5", "--failures", "2",
              "-a", app)
    assert "GET /health must answer 200 within 0.5 s" in dynod.ctl("healthcheck", "-a", app).stdout
    dynod.ctl("config:set", "SLOW_START=2.5", "-a", app)
    started = time.monotonic()
    dynod.wait_for(lambda: any(d["state"] == "starting" for d in dynod.dynos(app)), what="a new dyno starting")
    dynod.wait_for(lambda: _all_on_current(dynod, app, 2), timeout=30, what="both up after the health check")
    assert time.monotonic() - started >= 2.0  # $PORT accepted at once; /health held it back
    dynod.ctl("healthcheck:remove", "-a", app)
    assert "No health check" in dynod.ctl("healthcheck", "-a", app).stdout


def _dyno_pids(dynod: Dynod, app: str, name: str) -> list[int]:
    import sqlite3

    db = sqlite3.connect(dynod.root / "state" / "dynod.sqlite3")
    try:
        (dyno_id,) = db.execute("SELECT d.id FROM dynos d JOIN apps a ON a.id = d.app_id WHERE a.name = ? "
                                "AND d.name = ? AND d.state = 'up'", (app, name)).fetchone()
    finally:
        db.close()
    with dynod.client() as client:
        roots = client.request("GET", "/status")["cgroup_roots"]
    for root in roots:
        procs = Path(root) / dyno_id / "cgroup.procs"
        if procs.exists():
            return [int(p) for p in procs.read_text().split()]
    raise AssertionError(f"no cgroup for {dyno_id}")


def test_a_dyno_that_stops_answering_is_ejected_and_replaced(dynod: Dynod, health_app: str) -> None:
    import os
    import signal

    app = health_app
    dynod.ctl("healthcheck:set", "--path", "/health", "--timeout", "0.3", "--interval", "0.5", "--failures", "2",
              "-a", app)
    pids = _dyno_pids(dynod, app, "web.1")
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # hung: $PORT still accepts (the kernel's backlog), nothing answers
    try:
        dynod.wait_for(lambda: "out of the routes" in dynod.ctl("logs", "-a", app, "--ps", "web.1", "--source",
                                                                "dynod").stdout,
                       timeout=15, what="the hung dyno ejected")
        load = Load(dynod, app)
        with load.running():
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline or load.total < 30:
                time.sleep(0.05)
        assert load.failures == [], load.failures[:3]  # none went to the hung dyno (each would be an H12)
        dynod.wait_for(lambda: len([d for d in dynod.dynos(app) if d["state"] == "up"]) == 2, timeout=30,
                       what="web.1 replaced")
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


# -- ps:kill, ps:wait and bad input -----------------------------------------------------------------

def test_ps_kill_and_ps_wait(dynod: Dynod, served_app: str) -> None:
    app = served_app
    assert "Stopping web.1 dyno" in dynod.ctl("ps:kill", "web.1", "-a", app).stdout
    dynod.ctl("config:set", "GREETING=waited", "-a", app)
    out = dynod.ctl("ps:wait", "-w", "0.5", "-a", app, timeout=90)
    assert "done" in out.stdout
    assert _all_on_current(dynod, app, 2)


@pytest.mark.parametrize(("args", "words"), [
    (("ps:kill", "web.9"), "No dyno or process type 'web.9'"),
    (("features:enable", "prebot"), "Couldn't find that feature ('prebot'); dynod has: preboot."),
    (("features:info", "nope"), "Couldn't find that feature"),
    (("healthcheck:set", "--timeout", "99"), "timeout 99 is out of range: use 0.1 to 30"),
    (("healthcheck:set", "--failures", "0"), "failures 0 is out of range"),
    (("healthcheck:set", "--path", "nope"), "must start with /"),
    (("ps:wait", "-w", "0"), "Invalid --wait-interval 0"),
])
def test_bad_input_is_one_clear_line(dynod: Dynod, served_app: str, args: tuple[str, ...], words: str) -> None:
    result = dynod.ctl(*args, "-a", served_app, check=False)
    assert result.returncode == 1 and words in result.stderr, result
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "[ ] preboot" in _features(dynod, served_app)
    assert "No health check" in dynod.ctl("healthcheck", "-a", served_app).stdout


# -- the spawner's death ----------------------------------------------------------------------------

SLOW_PACK = {
    "slowpack/bin/detect": "#!/bin/sh\necho Slow\n",
    "slowpack/bin/compile": "#!/bin/sh\necho slowpack compiling\nsleep 120\n",
    "slowpack/bin/release": "#!/bin/sh\necho '--- {}'\n",
    ".buildpacks": "./slowpack\n",
}


def _spawner_pid(dynod: Dynod) -> int | None:
    """The spawner itself, not one of its forks: a warm dyno waiting for its spec (or any child
    before its exec) has the spawner's command line too, and with pids wrapping (pid_max 32768
    here) it can have the lower pid. The spawner is the one whose parent is not such a process."""
    socket_path = str(dynod.root / "run" / "spawner.sock")
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if b"dynod.linux.spawner" in args and socket_path.encode() in args:
                parents[int(entry.name)] = ppid
    daemon = dynod.proc.pid if dynod.proc is not None else None
    started_by_dynod = [pid for pid, ppid in parents.items() if ppid == daemon]
    roots = started_by_dynod or [pid for pid, ppid in parents.items() if ppid not in parents]
    return roots[0] if len(roots) == 1 else None


def test_the_spawners_death_leaves_no_ghosts(dynod: Dynod, served_app: str, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    app = served_app
    slow = write_app(tmp_path / "slow", PROCFILE, {"boot.py": BOOT_APP, **SLOW_PACK})
    for name in ("detect", "compile", "release"):
        (slow / "slowpack" / "bin" / name).chmod(0o755)
    build = subprocess.Popen([str(VENV_BIN / "dynoctl"), "deploy", str(slow), "-a", app], env=dynod.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(build.stdout or ()), daemon=True)
    reader.start()
    try:
        dynod.wait_for(lambda: any("slowpack compiling" in line for line in output), timeout=60,
                       what=f"the slow build compiling: {output}")
        old_spawner = _spawner_pid(dynod)
        assert old_spawner is not None
        load = Load(dynod, app)
        with load.running():
            _settle(load, 0.5)
            os.kill(old_spawner, signal.SIGKILL)
            build.wait(timeout=60)
            reader.join(timeout=10)
            assert build.returncode != 0 and "the spawner went away" in "".join(output), (output, dynod.log_tail())
            dynod.wait_for(lambda: _spawner_pid(dynod) not in (None, old_spawner), timeout=20, what="a new spawner")
            _settle(load, 2)
            assert dynod.proc is not None and dynod.proc.poll() is None, "dynod stays up"
            # The old dynos were re-adopted: they serve on, and ps still shows them.
            assert _all_on_current(dynod, app, 2)
            assert "failed" in dynod.ctl("builds", "-a", app).stdout.splitlines()[-1]
            # The new spawner makes dynos, and the re-adopted ones stop (their exit seen by pidfd).
            old = set(load.boots)
            dynod.ctl("ps:restart", "-a", app)
            dynod.wait_for(lambda: _replaced(load, old, 2) and _all_on_current(dynod, app, 2), timeout=60,
                           what="the re-adopted dynos replaced")
            _settle(load)
        assert load.failures == [], f"{len(load.failures)} of {load.total} failed: {load.failures[:3]}"
        logs = dynod.ctl("logs", "-a", app, "--source", "dynod", "--ps", "web", "-n", "1500").stdout
        assert "its status was lost with the spawner" in logs
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
