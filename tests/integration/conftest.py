"""A real dynod for the integration tests: its own state, sockets, cgroup subtree, bridge and subnet.

One dynod serves the whole session (starting one per test would dominate the run time); each test
makes its own app. At the end the daemon is shut down with ``stop_dynos`` and the suite checks
that nothing it made is left on the host: mounts, cgroups, links, processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
STACKS = Path(os.environ.get("DYNOD_TEST_STACKS", "/var/lib/dynod/stacks"))

pytestmark = pytest.mark.integration


def free_third_octet() -> int:
    """A 198.19.N.0/24 no bridge on the host routes now: two test dynods alive at once (the session's
    and a module's) on one subnet would each route the other's dynos to its own bridge, and a web
    dyno there is never reached (its boot times out as a crash)."""
    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True,
                            text=True).stdout
    taken = {int(part.split(".")[2]) for part in routes.split() if part.startswith("198.19.")}
    free = [n for n in range(1, 251) if n not in taken]
    return secrets.choice(free)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dynod:
    root: Path
    config: Path
    socket: Path
    cgroup_name: str
    bridge: str
    subnet: str
    http_port: int
    https_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "DYNOD_SOCKET": str(self.socket), "PYTHONUNBUFFERED": "1"}

    def ctl(self, *args: str, input: bytes | None = None, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(VENV_BIN / "dynoctl"), *args], input=input.decode() if input else None,
                                capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"dynoctl {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def client(self):  # type: ignore[no-untyped-def]
        from dynod.api.client import ApiClient

        return ApiClient(self.socket)

    def start(self) -> None:
        log = open(self.root / "dynod.log", "ab")
        self.proc = subprocess.Popen([str(VENV_BIN / "dynod"), "--config", str(self.config)], stdout=log,
                                     stderr=log, env=self.env(), cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dynod exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(self.socket))
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"dynod did not come up:\n{self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.socket.unlink(missing_ok=True)

    def diagnose(self) -> str:
        """What every app's dynos look like now, for a failure message."""
        try:
            import sqlite3

            db = sqlite3.connect(self.root / "state" / "dynod.sqlite3")
            rows = db.execute("SELECT id, state, pid FROM dynos").fetchall()
            db.close()
            with self.client() as client:
                status = client.request("GET", "/status")
            # A crashed dyno says why only in its app's log stream: the last lines of each app with one.
            logs = []
            for app in sorted({dyno_id.split(".")[0] for dyno_id, state, _ in rows if state == "crashed"}):
                tail = self.ctl("logs", "-a", app, "-n", "40", check=False, timeout=20)
                logs.append(f"logs of {app}:\n{tail.stdout}{tail.stderr}")
            return "\n".join([f"ledger dynos: {rows}", f"status: {status}", *logs])
        except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the failure
            return f"(no diagnosis: {exc})"

    def log_tail(self) -> str:
        """The end of dynod's log, and of its router's (a worker's exit or a refused snapshot shows there)."""
        tails = []
        for log in (self.root / "dynod.log", self.root / "state" / "router" / "router.log"):
            try:
                tails.append(f"--- {log.name}\n" + log.read_text()[-4000:])
            except FileNotFoundError:
                pass
        return "\n".join(tails)

    def wait_for(self, predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}\n{self.diagnose()}\n{self.log_tail()}")

    def dynos(self, app: str) -> list[dict]:
        with self.client() as client:
            return client.list_dynos(app)

    def up(self, app: str, count: int, type: str = "web", timeout: float = 30) -> list[dict]:
        def ready() -> list[dict] | None:
            dynos = [d for d in self.dynos(app) if d["type"] == type]
            if len(dynos) == count and all(d["state"] == "up" for d in dynos):
                return dynos
            return None

        return self.wait_for(ready, timeout=timeout, what=f"{count} {type} dynos up in {app}")

    def logs(self, app: str, lines: int = 1500) -> str:
        return self.ctl("logs", "-a", app, "-n", str(lines)).stdout


def _subtree_names(d: Dynod) -> tuple[str, str]:
    """dynod's two cgroup subtrees: its dynos' and its add-on servers' (daemon.py)."""
    return d.cgroup_name, f"{d.cgroup_name}-addons"


def _host_leftovers(d: Dynod) -> list[str]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if str(d.root) in line:
                found.append("mount: " + line.split()[4])
    for base, _dirs, _files in os.walk("/sys/fs/cgroup"):
        if os.path.basename(base) in _subtree_names(d):
            found.append("cgroup: " + base)
        if base.count("/") > 7:
            _dirs.clear()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name in (d.bridge, d.bridge + "b"):  # the dyno bridge and the build bridge
            found.append("link: " + name)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if f"dynod_{d.bridge}" in tables.split():
        found.append(f"nft table: dynod_{d.bridge}")
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if str(d.root) in line and "pytest" not in line:
            found.append("process: " + line.strip())
    return found


def _force_cleanup(d: Dynod) -> None:
    """After a failed shutdown: end what the suite started and remove what it made, by name."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    for line in out.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if str(d.root) in args and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    groups = []
    for base, dirs, _files in os.walk("/sys/fs/cgroup"):
        if os.path.basename(base) in _subtree_names(d):
            groups.append(base)
            dirs.clear()
        elif base.count("/") > 7:
            dirs.clear()
    for group in groups:
        for child in os.scandir(group):
            if child.is_dir():
                for pid in open(os.path.join(child.path, "cgroup.procs")).read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
    time.sleep(0.5)
    for group in groups:
        for child in os.scandir(group):
            if child.is_dir():
                with contextlib.suppress(OSError):
                    os.rmdir(child.path)
        with contextlib.suppress(OSError):
            os.rmdir(group)
    subprocess.run(["ip", "link", "del", d.bridge], capture_output=True)
    subprocess.run(["ip", "link", "del", d.bridge + "b"], capture_output=True)
    subprocess.run(["nft", "delete", "table", "inet", f"dynod_{d.bridge}"], capture_output=True)
    subprocess.run(["umount", "-R", "-l", str(d.root)], capture_output=True)


@contextlib.contextmanager
def running_dynod(*, warm_pool: int = 0, dynos_extra: str = "", allow_local_drains: bool = True,
                  stack: str = "debian-13") -> Iterator[Dynod]:
    """A real dynod of its own (state, sockets, cgroup subtree, bridge, subnet); checked for leftovers.

    ``dynos_extra``: more lines for its [dynos] section (a test's own settings). The tests' drain
    receivers listen on loopback, so local drains are allowed unless ``allow_local_drains=False``
    asks for the default (refused)."""
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    root = Path(tempfile.mkdtemp(prefix="dynod-it-"))
    token = secrets.token_hex(2)
    third = free_third_octet()
    d = Dynod(root=root, config=root / "dynod.toml", socket=root / "run" / "api.sock",
              cgroup_name=f"dynod-test-{token}", bridge=f"dyt{token}", subnet=f"198.19.{third}.0/25",
              http_port=free_port(), https_port=free_port())
    d.config.write_text(f"""
state_dir = "{root / 'state'}"
run_dir = "{root / 'run'}"
stacks_path = "{STACKS}"
stack = "{stack}"
api_group = "dynod"

[dynos]
stop_timeout = 3.0
boot_timeout = 15.0
restart_cooloff_base = 1.0
restart_cooloff_max = 2.0
tmpfs_size_mb = 64
warm_pool = {warm_pool}
{dynos_extra}

[network]
subnet = "{d.subnet}"
bridge = "{d.bridge}"
build_subnet = "198.19.{third}.128/25"

[cgroups]
name = "{d.cgroup_name}"

[router]
http = ["127.0.0.1:{d.http_port}"]
https = ["127.0.0.1:{d.https_port}"]
workers = 1

[logs]
metrics_interval = 0
allow_local_drains = {str(allow_local_drains).lower()}
""")
    try:
        d.start()
        yield d
    finally:
        try:
            with d.client() as client:
                client.request("POST", "/shutdown", {"stop_dynos": True})
            if d.proc is not None:
                d.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - the leak check below says what is left
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
        leftovers = _host_leftovers(d)
        if leftovers:
            _force_cleanup(d)
        log = root / "dynod.log"
        if log.exists():  # kept for a post-mortem: the state dir itself goes
            shutil.copy(log, Path(tempfile.gettempdir()) / "dynod-it-last.log")
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"the suite left these on the host: {leftovers}"


@pytest.fixture(scope="session")
def dynod() -> Iterator[Dynod]:
    with running_dynod() as d:
        yield d


@pytest.fixture
def app(dynod: Dynod) -> Iterator[str]:
    name = f"t{secrets.token_hex(4)}"
    dynod.ctl("apps:create", name)
    yield name
    dynod.ctl("apps:destroy", "-a", name, "--confirm", name, check=False)


WEB_APP = r'''
import http.server, os, signal, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['DYNO']} {os.environ.get('GREETING', 'hello')}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
print("booting", os.environ["DYNO"], flush=True)
server = http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H)
# As a Heroku app should: on SIGTERM stop accepting, finish the requests in flight, then exit.
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
print("stopped gracefully", flush=True)
'''


def write_app(path: Path, procfile: str, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Procfile").write_text(procfile)
    (path / "web.py").write_text(WEB_APP)
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


@pytest.fixture(scope="session")
def stack_rootfs() -> Path:
    from dynod.stack import StackStore

    store = StackStore(STACKS)
    if not store.is_built(store.default):
        pytest.skip(f"the default stack is not built under {STACKS}: run ./install.sh --deps-only")
    return store.path(store.default)
