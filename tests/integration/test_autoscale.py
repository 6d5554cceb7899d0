"""Autoscaling through a real dynod and its real router: a web app slowed past its p95 goal under a
bounded load loop scales up one step at a time, the host's memory limit refuses the step beyond what
it can hold (logged with the platform's reason), and once the load stops it scales back down.

Windows are 1 s here ([autoscale] window, up_windows, down_windows, cooldown: settings), so the
whole cycle takes seconds, not Heroku's minutes; the decision and its damping are the same code.
"""

from __future__ import annotations

import http.client
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.platform import host_memory_mb

from .conftest import Dynod, running_dynod, write_app
from .test_metrics_router import SLOW_APP

pytestmark = pytest.mark.integration

SCALED = re.compile(r"dynod\[autoscale\]: Autoscaling: scaled web from (\d+) to (\d+): (.*)")
REFUSED = re.compile(r"dynod\[autoscale\]: Autoscaling: web stays at (\d+) \(wanted (\d+): .*\): the platform "
                     r"refused: (.*)")


@pytest.fixture(scope="module")
def scaling_dynod() -> Iterator[Dynod]:
    # The host offers room for two standard-1X dynos (512 MB each) and not three: the third step is
    # the platform's to refuse. dynos_extra lands in [dynos]; the table after it is this dynod's own.
    ratio = 1280 / host_memory_mb()
    with running_dynod(dynos_extra=f"memory_overcommit = {ratio:.6f}\n[autoscale]\nwindow = 1.0\nup_windows = 2\n"
                                   "down_windows = 3\ncooldown = 2.0\n") as d:
        yield d


def _load(port: int, host: str, stop: threading.Event, deadline: float, errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            conn.request("GET", "/?ms=300", headers={"Host": host})
            conn.getresponse().read()
        except (OSError, http.client.HTTPException) as exc:
            errors.append(repr(exc))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()


def test_scales_up_under_load_within_what_the_host_holds_and_down_after(scaling_dynod: Dynod,
                                                                        tmp_path: Path) -> None:
    d = scaling_dynod
    app = f"a{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "web: python3 slow.py\n",
                                                    {"slow.py": SLOW_APP})), "-a", app)
        d.up(app, 1)
        out = d.ctl("ps:autoscale:enable", "web", "--min", "1", "--max", "3", "--p95", "100ms", "-a", app).stdout
        assert "1 to 3 dynos, p95 goal 100 ms" in out
        errors: list[str] = []
        deadline = time.monotonic() + 40  # bounded: the loop ends by itself whatever happens
        threads = [threading.Thread(target=_load, args=(d.http_port, f"{app}.localhost", stop, deadline, errors))
                   for _ in range(4)]
        for t in threads:
            t.start()
        d.wait_for(lambda: REFUSED.search(d.logs(app)), timeout=30, what="a step up and then the host's refusal")
        stop.set()
        for t in threads:
            t.join(timeout=35)
        logs = d.logs(app)
        ups = SCALED.findall(logs)
        assert ups and ups[0][:2] == ("1", "2") and "over the 100 ms goal" in ups[0][2], logs[-3000:]
        stays, wanted, why = REFUSED.search(logs).groups()  # type: ignore[union-attr]
        assert (stays, wanted) == ("2", "3") and "Not enough memory on this host" in why
        d.up(app, 2)
        shown = d.ctl("ps:autoscale", "-a", app).stdout
        assert "between 1 and 3 dynos, p95 goal 100 ms" in shown and "last decision" in shown

        # No more traffic: well under the goal (no requests at all) for three windows -> one step down.
        d.wait_for(lambda: ("2", "1") in [m[:2] for m in SCALED.findall(d.logs(app))], timeout=30,
                   what="the step back down to 1")
        d.up(app, 1)
        steps = [(int(a), int(b)) for a, b, _why in SCALED.findall(d.logs(app))]
        assert all(abs(b - a) == 1 for a, b in steps), steps  # one step at a time
        assert max(b for _a, b in steps) == 2  # never beyond what the host holds
        assert "Scaled web to 2 by autoscaling" in d.logs(app)
        d.ctl("ps:autoscale:disable", "web", "-a", app)
        assert "Autoscaling is off" in d.ctl("ps:autoscale", "-a", app).stdout
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=35)
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


def test_bad_autoscaling_input_is_one_line_and_changes_nothing(scaling_dynod: Dynod) -> None:
    d = scaling_dynod
    app = f"a{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    try:
        for args, words in ((["--min", "5", "--max", "2", "--p95", "500ms"], "above --max"),
                            (["--min", "1", "--max", "101", "--p95", "500ms"], "limit of 100"),
                            (["--min", "0", "--max", "2", "--p95", "500ms"], "at least 1"),
                            (["--min", "1", "--max", "2", "--p95", "fast"], "Invalid p95 goal"),
                            (["--min", "1", "--max", "2", "--p95", "90s"], "Invalid p95 goal"),
                            (["--min", "x", "--max", "2", "--p95", "1s"], "invalid int value")):
            result = d.ctl("ps:autoscale:enable", "web", *args, "-a", app, check=False)
            assert result.returncode == 1 and words in result.stderr, result
            assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        result = d.ctl("ps:autoscale:enable", "worker", "--min", "1", "--max", "2", "--p95", "1s", "-a", app,
                       check=False)
        assert result.returncode == 1 and "web dynos only" in result.stderr
        assert "Autoscaling is off" in d.ctl("ps:autoscale", "-a", app).stdout
        result = d.ctl("ps:autoscale:disable", "web", "-a", app, check=False)
        assert result.returncode == 1 and "not enabled" in result.stderr
        d.ctl("ps:autoscale:enable", "web", "--min", "1", "--max", "2", "--p95", "1s", "-a", app)
        d.kill9()  # the policy is on disk: the next dynod keeps it
        d.start()
        assert "between 1 and 2 dynos, p95 goal 1000 ms" in d.ctl("ps:autoscale", "-a", app).stdout
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
    import sqlite3

    db = sqlite3.connect(d.root / "state" / "autoscale.sqlite3")
    assert db.execute("SELECT count(*) FROM policies WHERE app = ?", (app,)).fetchone() == (0,)  # gone with it
    db.close()
