"""ps:exec against the real kernel: a command inside a running dyno, through dynoctl and a real dynod."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import VENV_BIN, Dynod, write_app

pytestmark = pytest.mark.integration

# The app writes a file to its own /tmp, then idles: what an exec session must find, as the app left it.
WORKER = "import time\nopen('/tmp/mark', 'w').write('written by the app\\n')\nprint('ready', flush=True)\n" \
         "time.sleep(100000)\n"


@pytest.fixture
def worker_app(dynod: Dynod, app: str, tmp_path: Path) -> str:
    dynod.ctl("deploy", str(write_app(tmp_path / "src", "worker: python3 worker.py\n", {"worker.py": WORKER})),
              "-a", app)
    dynod.ctl("ps:scale", "worker=1", "-a", app)
    dynod.up(app, 1, type="worker", timeout=90)  # generous: the suite shares a loaded host
    dynod.wait_for(lambda: "app[worker.1]: ready" in dynod.logs(app), timeout=90, what="the worker's file written")
    return app


def exec_in(dynod: Dynod, app: str, *command: str, check: bool = True, dyno: str = "worker.1",
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return dynod.ctl("ps:exec", "-d", dyno, "-a", app, "--", *command, check=check, timeout=timeout)


def test_exec_sees_the_dynos_processes_files_and_nothing_of_the_host(dynod: Dynod, worker_app: str) -> None:
    script = (
        "echo pwd=$(pwd); echo uid=$(id -u) init_uid=$(stat -c %u /proc/1); ps -eo pid=,args=; "
        "cat /tmp/mark; grep -E '^(Seccomp|CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status; "
        "grep -E ':(memory|pids):' /proc/self/cgroup; echo hostname=$(hostname); "
        "echo mounts=$(cut -d' ' -f5 /proc/self/mountinfo | tr '\\n' ' ')"
    )
    out = exec_in(dynod, worker_app, "bash", "-c", script).stdout
    # Only the echoed lines (ps prints this very script too, in the session's own command line).
    values = dict(word.split("=", 1) for line in out.splitlines() if line.startswith(("pwd=", "uid=", "hostname="))
                  for word in line.split() if "=" in word)
    assert values["pwd"] == "/app"
    # The app's own uid, the one its init runs as (the idmapped view: not root, not the stack's user).
    assert values["uid"] == values["init_uid"] and int(values["uid"]) >= 2_000_000_000, out
    processes = [line.split(None, 1) for line in out.splitlines() if line.strip()[:1].isdigit()
                 and len(line.split(None, 1)) == 2 and not line.startswith(("Seccomp", "Cap"))]
    commands = {int(pid): args for pid, args in processes}
    assert commands[1].startswith("/usr/bin/tini"), out  # the dyno's own init is PID 1
    assert any("python3 worker.py" in args for args in commands.values()), out  # and its app
    assert len(commands) <= 6, out  # tini, the app's bash and python, this session: none of the host's
    assert os.getpid() not in commands or "pytest" not in commands[os.getpid()]
    assert not any("dynod" in args or "pytest" in args or "systemd" in args for args in commands.values()), out
    assert "written by the app" in out  # its /tmp, in its own tmpfs layer
    assert "Seccomp:\t2" in out and "NoNewPrivs:\t1" in out
    for cap in ("CapEff", "CapPrm", "CapBnd"):
        assert f"{cap}:\t0000000000000000" in out, out
    assert ":memory:/\n" in out and ":pids:/\n" in out  # in the dyno's cgroups, seen from its namespace
    assert values["hostname"] != os.uname().nodename
    mounts = next(line for line in out.splitlines() if line.startswith("mounts=")).split("=", 1)[1].split()
    assert mounts[0] == "/" and not any(m.startswith(("/work", "/home", "/var/lib/dynod", "/tmp/dynod"))
                                        for m in mounts), mounts
    # What the session writes is the dyno's: the app sees it, as the session saw the app's file.
    exec_in(dynod, worker_app, "sh", "-c", "echo from-exec > /tmp/exec-note")
    assert exec_in(dynod, worker_app, "cat", "/tmp/exec-note").stdout == "from-exec\n"


def test_exec_returns_the_exit_code_pipes_stdio_and_gives_a_tty(dynod: Dynod, worker_app: str) -> None:
    result = exec_in(dynod, worker_app, "sh", "-c", "echo out; echo err >&2; exit 5", check=False)
    assert (result.returncode, result.stdout) == (5, "out\n") and "err" in result.stderr
    piped = dynod.ctl("ps:exec", "-d", "worker.1", "-a", worker_app, "--", "tr", "a-z", "A-Z", input=b"shout\n")
    assert piped.stdout == "SHOUT\n"
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["DYNOD_SOCKET"] = str(dynod.socket)
        os.execv(str(VENV_BIN / "dynoctl"), ["dynoctl", "ps:exec", "-d", "worker.1", "-a", worker_app, "--",
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


def test_exec_into_a_missing_or_stopped_dyno_is_one_line(dynod: Dynod, worker_app: str) -> None:
    def fails(*args: str) -> str:
        result = dynod.ctl(*args, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        return lines[0]

    assert "No running dyno worker.7" in fails("ps:exec", "-d", "worker.7", "-a", worker_app, "--", "true")
    assert "no-such-app-x" in fails("ps:exec", "-d", "worker.1", "-a", "no-such-app-x", "--", "true")
    assert "-d" in fails("ps:exec", "-a", worker_app, "--", "true")  # which dyno is required
    dynod.ctl("ps:scale", "worker=0", "-a", worker_app)
    dynod.wait_for(lambda: not dynod.dynos(worker_app), what="the worker gone")
    assert "No running dyno worker.1" in fails("ps:exec", "-d", "worker.1", "-a", worker_app, "--", "true")


def test_exec_cannot_escape_the_dynos_pids_limit(dynod: Dynod, worker_app: str) -> None:
    count = "cat /sys/fs/cgroup/pids/pids.current"
    before = int(exec_in(dynod, worker_app, "sh", "-c", count).stdout)
    forker = (
        "import os, signal\nkids = []\ntry:\n    for _ in range(400):\n        pid = os.fork()\n"
        "        if pid == 0:\n            signal.pause()\n        kids.append(pid)\nexcept OSError:\n    pass\n"
        "print('forked', len(kids), flush=True)\nfor pid in kids:\n    os.kill(pid, 9)\n"
    )
    out = exec_in(dynod, worker_app, "python3", "-c", forker).stdout
    forked = int(out.split("forked")[1].split()[0])
    # standard-1X: 256 processes and threads for the whole dyno, the app's two (tini, python) and the
    # session's own python counted with what it forks.
    assert 200 <= forked <= 256 - 3, out
    assert int(exec_in(dynod, worker_app, "sh", "-c", count).stdout) == before  # nothing left behind


def test_exec_into_a_full_dyno_is_refused_in_one_line(dynod: Dynod, app: str, tmp_path: Path) -> None:
    hog = ("import os, signal, time\ntry:\n    while True:\n        if os.fork() == 0:\n            signal.pause()\n"
           "except OSError:\n    print('full', flush=True)\ntime.sleep(100000)\n")
    dynod.ctl("deploy", str(write_app(tmp_path / "src", "worker: python3 hog.py\n", {"hog.py": hog})), "-a", app)
    dynod.ctl("ps:scale", "worker=1", "-a", app)
    dynod.wait_for(lambda: "app[worker.1]: full" in dynod.logs(app), timeout=120, what="the dyno at its pids limit")
    result = dynod.ctl("ps:exec", "-d", "worker.1", "-a", app, "--", "true", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result
    assert result.stderr.strip().splitlines() == [
        " !    Cannot exec into worker.1: the dyno is at its process limit (256 processes and threads).".strip()
    ], result.stderr


def test_a_session_whose_client_leaves_is_ended_and_the_dyno_keeps_running(dynod: Dynod, worker_app: str) -> None:
    client = subprocess.Popen([str(VENV_BIN / "dynoctl"), "ps:exec", "-d", "worker.1", "-a", worker_app, "--",
                               "sleep", "4242"], env=dynod.env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def sleeping() -> bool:
            return "sleep 4242" in exec_in(dynod, worker_app, "ps", "-eo", "args=").stdout

        dynod.wait_for(sleeping, what="the session's sleep in the dyno")
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        dynod.wait_for(lambda: not sleeping(), what="the session's process ended")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert [d["state"] for d in dynod.dynos(worker_app)] == ["up"]
    assert "python3 worker.py" in exec_in(dynod, worker_app, "ps", "-eo", "args=").stdout


def test_a_session_ends_with_the_dyno_it_entered(dynod: Dynod, worker_app: str) -> None:
    client = subprocess.Popen([str(VENV_BIN / "dynoctl"), "ps:exec", "-d", "worker.1", "-a", worker_app, "--",
                               "sleep", "4343"], env=dynod.env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        dynod.wait_for(lambda: "sleep 4343" in exec_in(dynod, worker_app, "ps", "-eo", "args=").stdout,
                       what="the session's sleep in the dyno")
        dynod.ctl("ps:stop", "worker.1", "-a", worker_app)
        _, stderr = client.communicate(timeout=60)
        # The stop's SIGTERM goes to every process in the dyno's cgroup, the session's too (143), unless
        # the app's exit ended tini and with it the dyno's PID namespace first (SIGKILL: 137). An exit
        # code either way, not a traceback.
        assert client.returncode in (143, 137) and b"Traceback" not in stderr, (client.returncode, stderr)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
