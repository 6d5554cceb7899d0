"""Eco dynos sleep (issue 12), through a real dynod and its router: an eco app with no request for
the idle time sleeps, web and worker; the next request wakes it and is answered; a standard app
never sleeps. The idle time is shortened to seconds here ([dynos] eco_idle_minutes)."""

from __future__ import annotations

import http.client
import secrets
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration

IDLE_SECONDS = 6.0
WORKER = 'import time\nwhile True:\n    print("working", flush=True)\n    time.sleep(1)\n'
PROCFILE = "web: python3 web.py\nworker: python3 worker.py\n"


@pytest.fixture(scope="module")
def dynod() -> Iterator[Dynod]:
    with running_dynod(dynos_extra=f"eco_idle_minutes = {IDLE_SECONDS / 60}") as d:
        yield d


def _app(dynod: Dynod, tmp_path: Path, size: str) -> Iterator[str]:
    name = f"s{secrets.token_hex(4)}"
    dynod.ctl("apps:create", name)
    try:
        # A long timeout: a build waits its turn on a busy host (other test runs build too).
        dynod.ctl("deploy", str(write_app(tmp_path / name, PROCFILE, {"worker.py": WORKER})), "-a", name,
                  timeout=300)
        dynod.ctl("ps:scale", f"web=1:{size}", f"worker=1:{size}", "-a", name)
        dynod.up(name, 1)
        dynod.up(name, 1, type="worker")
        yield name
    finally:
        dynod.ctl("apps:destroy", "-a", name, "--confirm", name, check=False)


@pytest.fixture
def eco_app(dynod: Dynod, tmp_path: Path) -> Iterator[str]:
    yield from _app(dynod, tmp_path, "eco")


@pytest.fixture
def standard_app(dynod: Dynod, tmp_path: Path) -> Iterator[str]:
    yield from _app(dynod, tmp_path, "standard-1X")


def get(dynod: Dynod, app: str) -> tuple[int, float, float]:
    """(status, seconds from sending the request to its first byte back, to the whole answer)."""
    with socket.create_connection(("127.0.0.1", dynod.http_port), timeout=90) as sock:
        started = time.monotonic()
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {app}.localhost\r\nConnection: close\r\n\r\n".encode())
        first = sock.recv(1, socket.MSG_PEEK)
        first_byte = time.monotonic() - started
        assert first, "the router closed without an answer"
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        return response.status, first_byte, time.monotonic() - started


def asleep(dynod: Dynod, app: str) -> bool:
    """Every web and worker slot shows "idle" (Heroku's state for a sleeping eco dyno)."""
    dynos = {d["name"]: d["state"] for d in dynod.dynos(app) if d["type"] in ("web", "worker")}
    return dynos == {"web.1": "idle", "worker.1": "idle"}


def test_an_eco_app_sleeps_when_idle_and_a_request_wakes_it(dynod: Dynod, eco_app: str) -> None:
    app = eco_app
    status, _, _ = get(dynod, app)
    assert status == 200
    last_request = time.monotonic()
    dynod.wait_for(lambda: asleep(dynod, app), timeout=IDLE_SECONDS + 20, what=f"{app} asleep")
    assert time.monotonic() - last_request >= IDLE_SECONDS - 0.5  # not before the idle time
    # A slot shows "idle" from the moment the app falls asleep, while its dyno is still on its way
    # down: a web dyno first waits for the router to drop its route, so its exit is logged later.
    stopped = [f"dynod[{dyno}]: State changed from up to down" for dyno in ("web.1", "worker.1")]
    dynod.wait_for(lambda: all(line in dynod.logs(app) for line in stopped), timeout=30,
                   what=f"{app}'s dynos down")
    logs = dynod.logs(app)
    for dyno in ("web.1", "worker.1"):
        assert f"dynod[{dyno}]: Idling" in logs, logs
    time.sleep(1.0)
    assert asleep(dynod, app), "something started the sleeping app again"

    # The next request wakes it, is held while the web dyno boots, and is served.
    status, first_byte, _ = get(dynod, app)
    assert status == 200
    assert first_byte < 15, first_byte
    dynod.up(app, 1)
    dynod.up(app, 1, type="worker")  # the worker slept and came back with it
    logs = dynod.logs(app)
    assert "dynod[web.1]: Unidling" in logs and "dynod[worker.1]: Unidling" in logs, logs
    assert "H20" not in logs and "H14" not in logs, logs

    # Awake again it sleeps again after the idle time, and wakes again.
    dynod.wait_for(lambda: asleep(dynod, app), timeout=IDLE_SECONDS + 20, what=f"{app} asleep again")
    assert get(dynod, app)[0] == 200


def test_a_standard_app_never_sleeps(dynod: Dynod, standard_app: str) -> None:
    app = standard_app
    before = {d["name"]: d["created_at"] for d in dynod.dynos(app)}
    status = get(dynod, app)[0]
    assert status == 200, f"{status}\n{dynod.diagnose()}\n{dynod.log_tail()}"
    time.sleep(IDLE_SECONDS * 2 + 2)
    after = {d["name"]: d["created_at"] for d in dynod.dynos(app) if d["state"] == "up"}
    assert after == before, "a standard app's dynos were stopped or replaced while idle"
    assert "Idling" not in dynod.logs(app)


def test_eco_beside_another_size_is_one_line_and_changes_nothing(dynod: Dynod, eco_app: str) -> None:
    app = eco_app
    result = dynod.ctl("ps:scale", "worker=1:standard-1X", "-a", app, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Eco dynos cannot run beside other sizes" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    with dynod.client() as client:
        formation = {f["type"]: (f["quantity"], f["size"]) for f in client.request("GET", f"/apps/{app}/formation")}
    assert formation == {"web": (1, "eco"), "worker": (1, "eco")}


def test_wake_latency(dynod: Dynod, eco_app: str) -> None:
    """Request in to first byte out for a sleeping app (docs/manager.md quotes this figure)."""
    app = eco_app
    firsts: list[float] = []
    for _ in range(3):
        dynod.wait_for(lambda: asleep(dynod, app), timeout=IDLE_SECONDS + 20, what=f"{app} asleep")
        time.sleep(0.5)
        status, first_byte, _ = get(dynod, app)
        assert status == 200
        firsts.append(first_byte)
    warm = [get(dynod, app)[1] for _ in range(5)]
    print(f"\nwake latency (request in to first byte out): median {statistics.median(firsts) * 1000:.0f} ms "
          f"of {[round(x * 1000) for x in firsts]} ms; awake: median {statistics.median(warm) * 1000:.1f} ms")
    assert max(firsts) < 15


def test_a_sleeping_app_stays_asleep_through_a_dynod_restart_and_wakes_after(dynod: Dynod, eco_app: str) -> None:
    app = eco_app
    dynod.wait_for(lambda: asleep(dynod, app), timeout=IDLE_SECONDS + 20, what=f"{app} asleep")
    dynod.kill9()
    dynod.start()
    time.sleep(2.0)  # a reconcile pass or two: a dynod that forgot would have started the formation
    assert asleep(dynod, app), dynod.dynos(app)
    status, first_byte, _ = get(dynod, app)  # the router outlived dynod; its wake reaches the new one
    assert status == 200 and first_byte < 15, (status, first_byte)
    dynod.up(app, 1, type="worker")


def test_ps_restart_of_a_sleeping_app_wakes_it(dynod: Dynod, eco_app: str) -> None:
    app = eco_app
    dynod.wait_for(lambda: asleep(dynod, app), timeout=IDLE_SECONDS + 20, what=f"{app} asleep")
    dynod.ctl("ps:restart", "web", "-a", app)  # no dyno runs, yet not "no such dyno": it wakes
    dynod.up(app, 1)
    dynod.up(app, 1, type="worker")
    assert "dynod[web.1]: Unidling" in dynod.logs(app)
