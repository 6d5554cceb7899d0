"""Issue 9: a dynod restarted from another cgroup adopts its dynos from their recorded cgroups.

dynod's subtree is made beneath the cgroup it starts in, so a restart from another cgroup (a
``dynod &`` from some shell) moves the subtree. The test does that for real: a dynod runs a
worker, is killed with -9, and a new one is started inside a temporary cgroup of the test's own
(its pid written into that group's cgroup.procs before it execs). The same dyno must be adopted
and still watched (a memory hog is killed with R15 and restarted), the earlier subtree must go
with its last dyno, scaling to 0 must remove the new dyno's group, and nothing may be left in
either place.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.linux.cgroups.paths import read_mounts
from dynod.linux.cgroups.v1 import CONTROLLERS

from .conftest import VENV_BIN, Dynod, running_dynod, write_app

# Holds still until the test says go (SIGUSR1), then takes more than the hard limit (2 x 512 MB).
HOG = ("import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
       "print('waiting', flush=True)\nsignal.sigwait({signal.SIGUSR1})\nprint('hogging', flush=True)\n"
       "x = bytearray(1300 << 20)\nx[::4096] = b'x' * len(x[::4096])\ntime.sleep(60)\n")


def _hierarchies() -> dict[str, str]:
    """controller -> the directory of the test's own cgroup in it (where a dynod it starts sits)."""
    mounts = read_mounts()
    if "memory" not in mounts.v1:
        pytest.skip("this test moves dynod between cgroup v1 groups (a hybrid host)")
    return {c: mounts.v1[c].directory(mounts.v1[c].own_path) for c in CONTROLLERS if c in mounts.v1}


@contextlib.contextmanager
def temporary_cgroup() -> Iterator[dict[str, str]]:
    """A child of the test's own cgroup in each hierarchy dynod uses; removed afterwards, with
    whatever a failed run left inside it (processes killed, groups removed deepest first)."""
    name = f"dynod-it-move-{secrets.token_hex(3)}"
    groups = {c: os.path.join(d, name) for c, d in _hierarchies().items()}
    for directory in groups.values():
        os.mkdir(directory)
    try:
        yield groups
    finally:
        for directory in groups.values():
            for base, _dirs, _files in sorted(os.walk(directory), key=lambda w: -w[0].count("/")):
                for pid in Path(base, "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.2)
        for directory in groups.values():
            for base, _dirs, _files in sorted(os.walk(directory), key=lambda w: -w[0].count("/")):
                with contextlib.suppress(OSError):
                    os.rmdir(base)


def _start_in(d: Dynod, groups: dict[str, str]) -> None:
    """d.start(), but the new dynod joins ``groups`` before it execs (as `dynod &` from a shell
    in another cgroup would be)."""
    procs = [os.path.join(g, "cgroup.procs") for g in groups.values()]

    def join() -> None:
        for path in procs:
            with open(path, "w") as f:
                f.write("0")

    log = open(d.root / "dynod.log", "ab")
    d.proc = subprocess.Popen([str(VENV_BIN / "dynod"), "--config", str(d.config)], stdout=log, stderr=log,
                              env=d.env(), cwd=Path(__file__).resolve().parents[2], preexec_fn=join)
    d.wait_for(lambda: d.proc is not None and (d.proc.poll() is not None or _answers(d)), timeout=60,
               what="dynod up")
    assert d.proc.poll() is None, d.log_tail()


def _answers(d: Dynod) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(d.socket))
        return True
    except OSError:
        return False


def _recorded(d: Dynod, dyno_name: str, app: str) -> tuple[str, dict[str, str]]:
    db = sqlite3.connect(d.root / "state" / "dynod.sqlite3")
    try:
        [(dyno_id, text)] = db.execute(
            "SELECT dynos.id, dynos.cgroup FROM dynos JOIN apps ON apps.id = dynos.app_id "
            "WHERE apps.name = ? AND dynos.name = ?", (app, dyno_name)).fetchall()
    finally:
        db.close()
    return dyno_id, json.loads(text)["v1"]


def _hog_pids(directory: str) -> list[int]:
    found = []
    for pid in Path(directory, "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):
            if b"hog.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
    return found


def test_a_dynod_started_from_another_cgroup_adopts_its_dyno_from_the_record(tmp_path: Path) -> None:
    own = _hierarchies()
    with temporary_cgroup() as moved:
        with running_dynod() as d:
            _adopt_from_another_cgroup(d, own, moved, tmp_path)
        # running_dynod's leftover check has run (dynod stopped, its subtree gone): the temporary
        # group must hold nothing but itself now, and no dynod subtree is left where it began.
        for c, directory in moved.items():
            assert [e.name for e in os.scandir(directory) if e.is_dir()] == [], directory
            assert not os.path.exists(os.path.join(own[c], d.cgroup_name))
            assert Path(directory, "cgroup.procs").read_text() == ""


def _adopt_from_another_cgroup(d: Dynod, own: dict[str, str], moved: dict[str, str], tmp_path: Path) -> None:
    app = f"t{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "worker: python3 hog.py\n",
                                                 {"hog.py": HOG})), "-a", app)
    d.ctl("ps:scale", "worker=1", "-a", app)
    [before] = d.up(app, 1, type="worker")
    d.wait_for(lambda: "app[worker.1]: waiting" in d.logs(app), what="the hog waiting")
    dyno_id, dirs = _recorded(d, "worker.1", app)
    first_subtree = {c: os.path.join(own[c], d.cgroup_name) for c in own}
    assert dirs == {c: os.path.join(first_subtree[c], dyno_id) for c in own}  # recorded where made

    d.kill9()
    _start_in(d, moved)
    assert str(d.proc.pid) in Path(moved["memory"], "cgroup.procs").read_text().split()
    with d.client() as client:
        roots = client.request("GET", "/status")["cgroup_roots"]
    assert sorted(roots) == sorted(os.path.join(g, d.cgroup_name) for g in moved.values())

    [after] = d.up(app, 1, type="worker")
    assert (after["name"], after["created_at"]) == (before["name"], before["created_at"])  # adopted, not new
    assert _recorded(d, "worker.1", app) == (dyno_id, dirs)
    # Still watched: the hog, told to go, is killed at the hard limit with R15 and restarted.
    pids = _hog_pids(dirs["memory"])
    assert pids, f"no hog in {dirs['memory']}"
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    d.wait_for(lambda: "Error R15 (Memory quota vastly exceeded)" in d.logs(app), timeout=60, what="an R15")
    d.wait_for(lambda: d.logs(app).count("app[worker.1]: waiting") >= 2, timeout=60, what="a restart")
    # The adopted dyno's group went from where it was recorded, and the earlier subtree with it.
    for c in own:
        assert not os.path.exists(dirs[c]), dirs[c]
        assert not os.path.exists(first_subtree[c]), first_subtree[c]
    new_id, new_dirs = _recorded(d, "worker.1", app)
    assert new_id != dyno_id
    assert new_dirs == {c: os.path.join(moved[c], d.cgroup_name, new_id) for c in own}
    assert all(os.path.isdir(p) for p in new_dirs.values())

    d.ctl("ps:scale", "worker=0", "-a", app)
    d.wait_for(lambda: not d.dynos(app), what="the worker stopped")
    d.wait_for(lambda: not any(os.path.exists(p) for p in new_dirs.values()), what="its cgroup removed")
    d.ctl("apps:destroy", "-a", app, "--confirm", app)


def test_a_record_naming_a_group_that_is_not_the_dynos_is_never_touched(tmp_path: Path) -> None:
    """An attack through the ledger: a dyno row whose cgroup names another group (one holding a
    live process). Adoption must neither kill that process nor remove the group."""
    with temporary_cgroup() as victim, running_dynod() as d:
        sleeper = subprocess.Popen(["sleep", "300"], preexec_fn=lambda: Path(victim["memory"], "cgroup.procs")
                                   .write_text("0"))
        try:
            app = f"t{secrets.token_hex(4)}"
            d.ctl("apps:create", app)
            d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "worker: sleep infinity\n")), "-a", app)
            d.ctl("ps:scale", "worker=1", "-a", app)
            [before] = d.up(app, 1, type="worker")
            dyno_id, dirs = _recorded(d, "worker.1", app)
            d.kill9()
            db = sqlite3.connect(d.root / "state" / "dynod.sqlite3")
            with db:
                db.execute("UPDATE dynos SET cgroup = ? WHERE id = ?",
                           (json.dumps({"v1": {"memory": victim["memory"]}}), dyno_id))
            db.close()
            d.start()
            [after] = d.up(app, 1, type="worker")
            assert after["created_at"] == before["created_at"]
            # The bad record was ignored and the group found by name, where dynod made it.
            assert all(os.path.isdir(p) for p in dirs.values())
            d.ctl("ps:scale", "worker=0", "-a", app)
            d.wait_for(lambda: not d.dynos(app), what="the worker stopped")
            assert sleeper.poll() is None  # not killed
            assert os.path.isdir(victim["memory"])
            assert str(sleeper.pid) in Path(victim["memory"], "cgroup.procs").read_text().split()
            d.ctl("apps:destroy", "-a", app, "--confirm", app)
        finally:
            sleeper.kill()
            sleeper.wait()
