"""Heroku Scheduler through a real dynod: a job's runs are scheduler.N one-off dynos whose output is
in the log stream, and each slot runs exactly once across a dynod kill -9 (the slot missed while it
was down runs once when it is back, none runs twice).

The dynod's schedule clock runs 20 times as fast as wall time ([scheduler] clock_rate, test only),
so the `* * * * *` job fires every 3 s; every rule is the one used at rate 1.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from dynod.scheduler.slot import CLOCK_ORIGIN

from .conftest import Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration

RATE = 20
PERIOD = 60 / RATE  # wall seconds between slots of `* * * * *`
STARTED = re.compile(r"(\S+) dynod\[scheduler\]: Scheduled job \w+: started (scheduler\.\d+) for (\S+?)"
                     r"( \(missed[^)]*\))?: ")


@pytest.fixture(scope="module")
def sched_dynod() -> Iterator[Dynod]:
    # dynos_extra lands in [dynos]; the table after it is this dynod's own.
    with running_dynod(dynos_extra=f"[scheduler]\nclock_rate = {RATE}\n") as d:
        yield d


def _runs(d: Dynod, app: str) -> list[tuple[str, str, bool]]:
    return [(m.group(2), m.group(3), bool(m.group(4))) for m in STARTED.finditer(d.logs(app))]


def _lags(d: Dynod, app: str) -> list[float]:
    """Seconds from each slot's (wall) time to its 'started' line."""
    return [datetime.fromisoformat(m.group(1)).timestamp() - datetime.fromisoformat(m.group(3).replace("Z", "+00:00"))
            .timestamp() for m in STARTED.finditer(d.logs(app))]


def test_each_slot_runs_once_across_a_kill_9(sched_dynod: Dynod, tmp_path: Path) -> None:
    d = sched_dynod
    app = f"s{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    try:
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", app)
        out = d.ctl("scheduler:add", "* * * * *", "-a", app, "--", "echo tick from $DYNO").stdout
        assert out.startswith("Added job ")
        listing = d.ctl("scheduler", "-a", app).stdout
        assert "* * * * *" in listing and "echo tick from $DYNO" in listing

        d.wait_for(lambda: len(_runs(d, app)) >= 2, timeout=PERIOD * 4 + 10, what="two scheduled runs")
        # Kill -9 right after a run started, then stay down over at least one slot.
        before = len(_runs(d, app))
        d.wait_for(lambda: len(_runs(d, app)) > before, timeout=PERIOD * 2 + 10, what="a third run")
        d.kill9()
        down_at = time.time()
        time.sleep(PERIOD * 2 + 0.5)  # two slots or so fall while dynod is down
        restart_at = time.time()  # every slot up to here was missed
        d.start()
        up_at = time.time()
        count = len(_runs(d, app))
        d.wait_for(lambda: len(_runs(d, app)) >= count + 3, timeout=PERIOD * 5 + 10, what="runs after the restart")
        with d.client() as client:
            [job] = client.list_jobs(app)
        assert job["last_run"]["outcome"] == "started" and job["schedule"] == "* * * * *"
        job_id = job["id"][:8]
        d.ctl("scheduler:remove", job_id, "-a", app)

        runs = _runs(d, app)
        slots = [slot for _name, slot, _late in runs]
        assert len(slots) == len(set(slots)), f"a slot ran twice: {runs}"
        names = [name for name, _slot, _late in runs]
        assert len(names) == len(set(names))
        times = [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in slots]
        assert times == sorted(times)
        # One run for the outage, not one per missed slot: the latest slot missed ran once when
        # dynod came back (or, had a newer slot come while it started, that one on time instead).
        in_outage = [t for t in times if down_at < t <= restart_at]
        latest_missed = CLOCK_ORIGIN + PERIOD * ((restart_at - CLOCK_ORIGIN) // PERIOD)  # the slots' grid
        assert latest_missed > down_at + PERIOD  # two or more slots really were missed
        assert in_outage in ([latest_missed], []), (runs, down_at, restart_at)
        assert in_outage or [t for t in times if restart_at < t <= up_at], f"the outage lost its run: {runs}"
        # Before the kill and after the restart, every slot ran (slots are one schedule minute apart).
        gaps = [round((b - a) * RATE / 60) for a, b in zip(times, times[1:], strict=False)]
        assert all(g >= 1 for g in gaps) and sum(1 for g in gaps if g > 1) <= 1, (gaps, runs)
        # The claims in the store agree: the job is gone with its runs.
        db = sqlite3.connect(d.root / "state" / "scheduler.sqlite3")
        assert db.execute("SELECT count(*) FROM jobs WHERE app = ?", (app,)).fetchone() == (0,)
        db.close()

        def all_output() -> bool:
            text = d.logs(app)
            return all(f"app[{name}]: tick from {name}" in text for name in names)

        d.wait_for(all_output, timeout=10, what=f"every run's output in the log stream: {names}")
        # On time: a run starts within a second of its slot (the late one after the restart aside).
        lags = sorted(_lags(d, app))
        assert lags[0] >= 0 and lags[len(lags) // 2] < 1.0, lags
        print(f"slot -> started line, s: median {lags[len(lags) // 2]:.3f}, all {[round(x, 3) for x in lags]}")
        # Never restarted, and never in the formation: gone once they exit.
        assert not [x for x in d.dynos(app) if x["type"] == "scheduler" and x["state"] == "crashed"]
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


def test_bad_schedules_are_one_line_and_change_nothing(sched_dynod: Dynod, tmp_path: Path) -> None:
    d = sched_dynod
    app = f"s{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    try:
        # A Procfile type named like the scheduler's runs is not scaled (nothing would run it).
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "web: python3 web.py\nscheduler: sleep 9\n")),
              "-a", app)
        result = d.ctl("ps:scale", "scheduler=1", "-a", app, check=False)
        assert result.returncode == 1 and "cannot be scaled" in result.stderr, result
        for schedule in ("every 7 minutes", "61 * * * *", "sometimes", "* * * * * *"):
            result = d.ctl("scheduler:add", schedule, "-a", app, "--", "echo", "hi", check=False)
            assert result.returncode == 1, result
            assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
        result = d.ctl("scheduler:add", "every 10 minutes", "-a", app, check=False)
        assert result.returncode == 1 and "Usage" in result.stderr
        assert "has no scheduled jobs" in d.ctl("scheduler", "-a", app).stdout
        result = d.ctl("scheduler:remove", "abcdef", "-a", app, check=False)
        assert result.returncode == 1 and "No scheduled job" in result.stderr
        # A job of a destroyed app goes with it.
        d.ctl("scheduler:add", "every day at 04:30", "-a", app, "--", "echo", "hi")
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
    db = sqlite3.connect(d.root / "state" / "scheduler.sqlite3")
    assert db.execute("SELECT count(*) FROM jobs WHERE app = ?", (app,)).fetchone() == (0,)
    db.close()


def test_a_run_is_stopped_after_its_interval(sched_dynod: Dynod, tmp_path: Path) -> None:
    """Heroku Scheduler's rule: a run lasts at most its job's interval (3 s of wall time here)."""
    d = sched_dynod
    app = f"s{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    try:
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", app)
        d.ctl("scheduler:add", "* * * * *", "-a", app, "--", "sleep 300")
        match = d.wait_for(lambda: re.search(r"(scheduler\.\d+) ran past its interval \(3 s\): stopping it",
                                             d.logs(app)), timeout=PERIOD * 4 + 10, what="a run stopped")
        with d.client() as client:
            client.remove_job(app, client.list_jobs(app)[0]["id"])
        name = match.group(1)
        d.wait_for(lambda: not [x for x in d.dynos(app) if x["name"] == name], timeout=15, what=f"{name} gone")
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
