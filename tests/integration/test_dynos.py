"""Dynos against the real kernel, driven through dynoctl and a real dynod."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import VENV_BIN, Dynod, write_app

pytestmark = pytest.mark.integration

WORKER_LOOP = "worker: sleep infinity"


def deploy(dynod: Dynod, app: str, path: Path) -> None:
    dynod.ctl("deploy", str(path), "-a", app)


def fetch(dynod: Dynod, app: str, path: str = "/") -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{dynod.http_port}{path}",
                                     headers={"Host": f"{app}.localhost"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def run(dynod: Dynod, app: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return dynod.ctl("run", "-a", app, "--", *command, check=check, timeout=60)


@pytest.fixture
def web_app(dynod: Dynod, app: str, tmp_path: Path) -> str:
    deploy(dynod, app, write_app(tmp_path / "src", "web: python3 web.py\n"))
    return app


def test_web_dyno_serves_through_the_router(dynod: Dynod, web_app: str) -> None:
    dynod.up(web_app, 1)
    assert dynod.wait_for(lambda: _try_fetch(dynod, web_app), what="a page") == "web.1 hello\n"
    logs = dynod.logs(web_app)
    assert "State changed from starting to up" in logs
    assert "app[web.1]: booting web.1" in logs


def _try_fetch(dynod: Dynod, app: str) -> str | None:
    try:
        return fetch(dynod, app)
    except OSError:
        return None


def test_one_off_dyno_is_isolated(dynod: Dynod, web_app: str) -> None:
    script = (
        "echo uid=$(id -u); echo pids=$(ls /proc | grep -c '^[0-9]'); echo host=$(hostname); "
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; "
        "echo mounts=$(cut -d' ' -f2 /proc/self/mounts | tr '\\n' ' '); "
        "test -e /proc/kcore && test -s /proc/kcore && echo kcore-readable; "
        "touch /usr/bin/intruder 2>/dev/null && echo stack-writable; "
        "echo data > /app/scratch && echo app-writable; "
        "ls /sys | wc -l | sed 's/^/sys=/'"
    )
    out = run(dynod, web_app, "bash", "-c", script).stdout
    assert int(out.split("uid=")[1].split()[0]) >= 2_000_000_000  # the app's own uid ([dynos] uid_first)
    pids = int(out.split("pids=")[1].split()[0])
    assert pids <= 6, out  # tini, bash and its children: nothing of the host's
    assert f"host={os.uname().nodename}" not in out
    assert "CapEff:\t0000000000000000" in out and "CapPrm:\t0000000000000000" in out
    assert "CapBnd:\t0000000000000000" in out and "NoNewPrivs:\t1" in out
    mounts = out.split("mounts=")[1].splitlines()[0].split()
    host_paths = ("/work", "/home", "/var/lib/dynod", "/tmp/dynod")
    assert mounts[0] == "/" and not any(m.startswith(host_paths) for m in mounts)
    assert "kcore-readable" not in out and "stack-writable" not in out
    assert "app-writable" in out and "sys=1" in out  # /sys holds only fs/cgroup: the dyno's own limits
    # The write went to that dyno's own tmpfs: a new dyno starts from the slug again.
    assert run(dynod, web_app, "test", "-e", "/app/scratch", check=False).returncode == 1


def test_run_returns_the_exit_code_and_pipes_stdio(dynod: Dynod, web_app: str) -> None:
    result = run(dynod, web_app, "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert result.returncode == 7
    assert result.stdout == "out\n" and "err" in result.stderr
    piped = dynod.ctl("run", "-a", web_app, "--", "tr", "a-z", "A-Z", input=b"shout\n")
    assert piped.stdout == "SHOUT\n"


def test_run_with_a_tty(dynod: Dynod, web_app: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["DYNOD_SOCKET"] = str(dynod.socket)
        os.execv(str(VENV_BIN / "dynoctl"), ["dynoctl", "run", "-a", web_app, "--",
                                              "bash", "-c", "test -t 0 && echo TTY=yes; stty size; exit 3"])
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert b"TTY=yes" in output, output
    assert os.waitstatus_to_exitcode(status) == 3


def test_scale_up_and_down(dynod: Dynod, web_app: str) -> None:
    dynod.ctl("ps:scale", "web=3", "-a", web_app)
    names = sorted(d["name"] for d in dynod.up(web_app, 3))
    assert names == ["web.1", "web.2", "web.3"]
    seen = {fetch(dynod, web_app).split()[0] for _ in range(40)}
    assert len(seen) >= 2  # the router spreads requests over the dynos
    dynod.ctl("ps:scale", "web=1", "-a", web_app)
    dynod.wait_for(lambda: [d["name"] for d in dynod.dynos(web_app)] == ["web.1"], what="scale down to web.1")
    ps = dynod.ctl("ps", "-a", web_app).stdout
    assert "=== web (standard-1X): python3 web.py (1)" in ps and "web.1: up" in ps


def test_config_change_makes_a_release_and_restarts(dynod: Dynod, web_app: str) -> None:
    dynod.up(web_app, 1)
    dynod.wait_for(lambda: _try_fetch(dynod, web_app), what="first page")
    dynod.ctl("config:set", "GREETING=bonjour", "-a", web_app)
    assert dynod.ctl("config:get", "GREETING", "-a", web_app).stdout.strip() == "bonjour"
    dynod.wait_for(lambda: _try_fetch(dynod, web_app) == "web.1 bonjour\n", what="the new config served")
    releases = dynod.ctl("releases", "-a", web_app).stdout
    assert "Set GREETING config vars" in releases and "Current: v3" in releases
    dynod.ctl("releases:rollback", "v2", "-a", web_app)
    dynod.wait_for(lambda: _try_fetch(dynod, web_app) == "web.1 hello\n", what="the rolled back config")
    assert "Rollback to v2" in dynod.ctl("releases", "-a", web_app).stdout


def test_a_crashed_dyno_is_restarted(dynod: Dynod, app: str, tmp_path: Path) -> None:
    deploy(dynod, app, write_app(tmp_path / "src", "worker: sh -c 'echo tick; sleep 0.3; exit 3'\n"))
    dynod.ctl("ps:scale", "worker=1", "-a", app)
    dynod.wait_for(lambda: dynod.logs(app).count("Process exited with status 3") >= 2, timeout=30,
                   what="two crashes")
    logs = dynod.logs(app)
    assert "State changed from up to crashed" in logs
    assert "State changed from crashed to starting" in logs or logs.count("Starting process") >= 2


def test_memory_limit_kills_and_restarts(dynod: Dynod, app: str, tmp_path: Path) -> None:
    hog = ("import time\nprint('hog', flush=True)\nx = bytearray(1300 << 20)\n"
           "x[::4096] = b'x' * len(x[::4096])\ntime.sleep(60)\n")
    deploy(dynod, app, write_app(tmp_path / "src", "worker: python3 hog.py\n", {"hog.py": hog}))
    dynod.ctl("ps:scale", "worker=1", "-a", app)
    dynod.wait_for(lambda: "R15" in dynod.logs(app), timeout=60, what="an R15")
    dynod.wait_for(lambda: dynod.logs(app).count("app[worker.1]: hog") >= 2, timeout=60, what="a restart")
    assert "Error R15 (Memory quota vastly exceeded)" in dynod.logs(app)


def test_pids_limit_holds(dynod: Dynod, web_app: str) -> None:
    forker = (
        "import os, signal\nkids = []\ntry:\n    for _ in range(400):\n        pid = os.fork()\n"
        "        if pid == 0:\n            signal.pause()\n        kids.append(pid)\nexcept OSError:\n    pass\n"
        "print('forked', len(kids), flush=True)\nfor pid in kids:\n    os.kill(pid, 9)\n"
    )
    out = run(dynod, web_app, "python3", "-c", forker).stdout
    forked = int(out.split("forked")[1].split()[0])
    assert 200 <= forked < 256  # standard-1X: 256 processes and threads per dyno, as on Heroku


def test_dynos_survive_kill_9_of_dynod(dynod: Dynod, app: str, tmp_path: Path) -> None:
    deploy(dynod, app, write_app(tmp_path / "src", "web: python3 web.py\n" + WORKER_LOOP + "\n"))
    dynod.ctl("ps:scale", "worker=1", "-a", app)
    dynod.up(app, 1)
    dynod.up(app, 1, type="worker")
    before = {d["name"]: d["created_at"] for d in dynod.dynos(app)}
    dynod.kill9()
    dynod.start()
    after = dynod.up(app, 1) + dynod.up(app, 1, type="worker")
    assert {d["name"]: d["created_at"] for d in after} == before  # the same dynos, not new ones
    dynod.wait_for(lambda: _try_fetch(dynod, app), what="a page after the restart")
    dynod.ctl("ps:scale", "worker=0", "-a", app)  # still managed
    dynod.wait_for(lambda: all(d["type"] != "worker" for d in dynod.dynos(app)), what="worker stopped")


def test_bad_input_is_one_clear_line(dynod: Dynod, web_app: str, tmp_path: Path) -> None:
    def fails(*args: str) -> str:
        result = dynod.ctl(*args, check=False)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        return result.stderr

    def releases() -> list[tuple[int, str]]:
        with dynod.client() as client:
            return [(r["version"], r["description"]) for r in client.list_releases(web_app)]

    releases_before = releases()
    assert "Invalid app name" in fails("apps:create", "Bad_Name")
    assert "process type" in fails("ps:scale", "nosuch=1", "-a", web_app)
    fails("ps:scale", "web=-1", "-a", web_app)
    fails("ps:scale", "web=two", "-a", web_app)
    assert "size" in fails("ps:scale", "web=1:huge-9X", "-a", web_app)
    assert "config var" in fails("config:set", "1BAD=x", "-a", web_app)
    fails("releases:rollback", "v99", "-a", web_app)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Procfile").write_text("this is not a procfile line\n")
    assert "Procfile" in fails("deploy", str(bad), "-a", web_app)
    slugs_dir = dynod.root / "state" / "slugs"
    slugs_before = sorted(p.name for p in slugs_dir.rglob("*"))
    for name, member in (("absolute", "/etc/evil"), ("dotdot", "app/../../evil"), ("outside", "etc/evil")):
        evil = tmp_path / f"{name}.tgz"
        with tarfile.open(evil, "w:gz") as tar:
            data = b"x"
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        fails("releases:create", "--slug", str(evil), "-a", web_app)
    setuid = tmp_path / "setuid.tgz"
    with tarfile.open(setuid, "w:gz") as tar:
        info = tarfile.TarInfo("app/bin/su")
        info.size, info.mode = 1, 0o4755
        tar.addfile(info, io.BytesIO(b"x"))
    fails("releases:create", "--slug", str(setuid), "-a", web_app)
    assert sorted(p.name for p in slugs_dir.rglob("*")) == slugs_before  # nothing left behind
    assert releases() == releases_before
    missing = subprocess.run([str(VENV_BIN / "dynoctl"), "apps"], capture_output=True, text=True,
                             env={**dynod.env(), "DYNOD_SOCKET": "/nonexistent/api.sock"})
    assert missing.returncode != 0 and "dynod is not running" in missing.stderr


def test_over_quota_is_r14_and_not_killed(dynod: Dynod, app: str, tmp_path: Path) -> None:
    hog = ("import time\nx = bytearray(700 << 20)\nx[::4096] = b'x' * len(x[::4096])\n"
           "print('holding', flush=True)\ntime.sleep(60)\n")
    deploy(dynod, app, write_app(tmp_path / "src", "worker: python3 hog.py\n", {"hog.py": hog}))
    dynod.ctl("ps:scale", "worker=1", "-a", app)
    dynod.wait_for(lambda: "Error R14 (Memory quota exceeded)" in dynod.logs(app), timeout=60, what="an R14")
    dynod.wait_for(lambda: "app[worker.1]: holding" in dynod.logs(app), timeout=60, what="the hog holding")
    time.sleep(1)
    logs = dynod.logs(app)
    assert "Process running mem=" in logs and "R15" not in logs
    assert logs.count("app[worker.1]: holding") == 1  # over the quota but under the hard limit: it runs on


def test_dynos_cannot_reach_each_other(dynod: Dynod, app: str, tmp_path: Path) -> None:
    deploy(dynod, app, write_app(tmp_path / "src", "web: python3 web.py\n"))
    dynod.ctl("ps:scale", "web=2", "-a", app)
    dynod.up(app, 2)
    probe = ("import json, socket, sys, urllib.request\n"
             "ips = sys.argv[1:]\n"
             "for ip in ips:\n"
             "    s = socket.socket(); s.settimeout(1)\n"
             "    print(ip, s.connect_ex((ip, 5000)), flush=True)\n")
    addresses = [line.split()[0] for line in _dyno_addresses(dynod, app)]
    out = run(dynod, app, "python3", "-c", probe, *addresses).stdout
    assert addresses and all(not line.endswith(" 0") for line in out.strip().splitlines()), out


def _dyno_addresses(dynod: Dynod, app: str) -> list[str]:
    import sqlite3

    db = sqlite3.connect(dynod.root / "state" / "dynod.sqlite3")
    rows = db.execute("SELECT ip FROM dynos WHERE name LIKE 'web.%' AND state = 'up'").fetchall()
    db.close()
    return [row[0] for row in rows]


def test_warm_dynos_start_and_are_refilled(tmp_path: Path) -> None:
    from .conftest import running_dynod

    with running_dynod(warm_pool=2) as d:
        memory_root = None

        def warm_groups() -> list[str]:
            nonlocal memory_root
            with d.client() as client:
                memory_root = Path(client.request("GET", "/status")["cgroup_roots"][0])
            return sorted(p.name for p in memory_root.iterdir() if p.name.startswith("warm."))

        before = d.wait_for(lambda: len(warm_groups()) == 2 and warm_groups(), what="two warm dynos")
        d.ctl("apps:create", "warmapp")
        deploy(d, "warmapp", write_app(tmp_path / "src", "web: python3 web.py\n"))
        d.up("warmapp", 1)
        assert d.wait_for(lambda: _try_fetch(d, "warmapp"), what="a page") == "web.1 hello\n"
        # The dyno took a warm dyno (its group renamed) and the pool made another.
        after = d.wait_for(lambda: len(warm_groups()) == 2 and warm_groups(), what="the pool refilled")
        assert len(set(before) - set(after)) == 1
        d.ctl("ps:scale", "web=0", "-a", "warmapp")
        d.wait_for(lambda: not d.dynos("warmapp"), what="web stopped")
