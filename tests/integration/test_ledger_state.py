"""The state dir through a real dynod: private to root, and a lost ledger refused at start.

Issue 9 items 6 and 7: an unprivileged local user reads nothing of an app's state (the ledger
with every config var, its WAL, slugs, unpacked slugs, git repositories, build logs); and a ledger
truncated to 0 bytes or deleted makes the real ``dynod`` binary exit with one line, touching no
dyno and leaving the ledger as it found it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import stat
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import VENV_BIN, Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dynod, str]]:
    with running_dynod() as d:
        app = f"t{secrets.token_hex(4)}"
        d.ctl("apps:create", app)
        d.ctl("config:set", "SECRET_TOKEN=s3cr3t-value", "-a", app)
        d.ctl("deploy", str(write_app(tmp_path_factory.mktemp("src"), "web: python3 web.py\n")), "-a", app)
        d.up(app, 1)
        yield d, app


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv],
                          capture_output=True, text=True, timeout=30)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def fetch(d: Dynod, app: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{d.http_port}/", headers={"Host": f"{app}.localhost"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def test_no_local_user_can_read_an_apps_state(deployed: tuple[Dynod, str]) -> None:
    d, app = deployed
    state = d.root / "state"
    targets = {
        "the ledger (config vars)": state / "dynod.sqlite3",
        "the ledger's WAL": state / "dynod.sqlite3-wal",
        "a slug": next((state / "slugs").glob("*.tgz")),
        "an unpacked slug": next((state / "slugs" / "unpacked").glob("*/app/Procfile")),
        "a git repository": state / "repos" / f"{app}.git" / "HEAD",
        "a build log": next((state / "builds" / app).glob("*.log")),
    }
    for what, path in targets.items():
        assert path.is_file(), what
    assert b"s3cr3t-value" in targets["the ledger (config vars)"].read_bytes() + \
        targets["the ledger's WAL"].read_bytes()  # the secret is in there, so reading it would leak it
    # The fixture's root is a private mkdtemp; open it, so that what stops nobody is the state dir.
    os.chmod(d.root, 0o755)
    try:
        control = as_nobody("cat", str(d.config))  # a file outside the state dir: the probe can read
        assert control.returncode == 0 and "state_dir" in control.stdout, control.stderr
        for what, path in targets.items():
            attempt = as_nobody("cat", str(path))
            assert attempt.returncode != 0 and "Permission denied" in attempt.stderr, what
            assert "s3cr3t" not in attempt.stdout
        listing = as_nobody("ls", str(state))
        assert listing.returncode != 0 and "Permission denied" in listing.stderr
    finally:
        os.chmod(d.root, 0o700)
    assert mode(state) == 0o700
    for suffix in ("", "-wal", "-shm"):
        assert mode(Path(f"{state / 'dynod.sqlite3'}{suffix}")) == 0o600, suffix


def _dyno_pids(ledger: Path, app: str) -> list[int]:
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT dynos.pid FROM dynos JOIN apps ON apps.id = dynos.app_id "
                          "WHERE apps.name = ? AND dynos.pid IS NOT NULL", (app,)).fetchall()
    finally:
        db.close()
    return [int(row[0]) for row in rows]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("lost", ["truncated to 0 bytes", "deleted"])
def test_a_lost_ledger_is_refused_and_no_dyno_is_stopped(deployed: tuple[Dynod, str], lost: str,
                                                         tmp_path: Path) -> None:
    d, app = deployed
    ledger = d.root / "state" / "dynod.sqlite3"
    before = {x["name"]: x["created_at"] for x in d.up(app, 1)}
    pids = _dyno_pids(ledger, app)
    assert pids and all(_alive(pid) for pid in pids)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)  # dynod exits; its dynos, spawner and router keep running
    assert d.proc.wait(timeout=60) == 0
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in ledger.parent.glob("dynod.sqlite3*"):
        shutil.copy2(path, backup / path.name)
    try:
        for path in ledger.parent.glob("dynod.sqlite3-*"):
            path.unlink()
        if lost == "deleted":
            ledger.unlink()
        else:
            ledger.write_bytes(b"")
        started = subprocess.run([str(VENV_BIN / "dynod"), "--config", str(d.config)], capture_output=True,
                                 text=True, env=d.env(), timeout=60)
        assert started.returncode == 1, started.stderr
        assert "Traceback" not in started.stderr
        said = [line for line in started.stderr.splitlines() if line.startswith("dynod: ")]
        assert len(said) == 1, started.stderr
        assert said[0].startswith(f"dynod: The ledger at {ledger} is "
                                  f"{'missing' if lost == 'deleted' else 'empty (0 bytes)'}, but ")
        assert "git repository" in said[0] and "Restore the ledger from a backup" in said[0]
        # Nothing was touched: the dynos run on and still serve, and the ledger is as it was left.
        assert all(_alive(pid) for pid in pids)
        assert "web.1" in fetch(d, app)
        if lost == "deleted":
            assert not ledger.exists()
        else:
            assert ledger.read_bytes() == b""
        assert sorted(p.name for p in ledger.parent.glob("dynod.sqlite3-*")) == []
    finally:
        for path in ledger.parent.glob("dynod.sqlite3*"):
            path.unlink()
        for path in backup.iterdir():
            shutil.copy2(path, ledger.parent / path.name)
        d.start()
    # With the ledger back, the same dynos are adopted, not replaced.
    assert {x["name"]: x["created_at"] for x in d.up(app, 1)} == before
