"""The default seccomp profile, tried from inside real dynos of a real dynod.

Each attack of issue 9 item 4 is run in a dyno of a confined app (and fails) and in a dyno of an
app listed in ``[dynos] seccomp_unconfined_apps`` (where it works: the control that shows the
filter, not something else, is what stops it). Ordinary programs still work under the filter.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration

RELAXED = f"relaxed{secrets.token_hex(3)}"

# Each probe prints "<name> ok" or "<name> errno=<n>"; raw syscalls so nothing in between hides
# the kernel's answer. x86_64 numbers (the host's architecture).
PROBES = r'''
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def probe(name, nr, *args):
    r = libc.syscall(nr, *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    e = ctypes.get_errno()
    print(name, "ok" if r >= 0 else f"errno={e}", flush=True)
params = ctypes.create_string_buffer(120)
probe("io_uring_setup", 425, 4, params)
probe("keyctl", 250, 0, ctypes.c_long(-3).value, 0)             # KEYCTL_GET_KEYRING_ID of the user keyring
probe("add_key", 248, b"user", b"dynotest", b"secret", 6, ctypes.c_long(-3).value)
probe("bpf", 321, 0, None, 0)                                   # BPF_MAP_CREATE with no attr
probe("perf_event_open", 298, None, 0, -1, -1, 0)
probe("userfaultfd", 323, 0)
probe("clone3", 435, None, 0)
probe("setns", 308, 0, 0)
probe("personality_no_aslr", 135, 0x0040000)
probe("personality_query", 135, 0xFFFFFFFF)
probe("fsopen", 430, b"tmpfs", 0)
probe("unshare_user", 272, 0x10000000)
probe("mount", 165, b"none", b"/tmp", b"tmpfs", 0, None)
probe("init_module", 175, None, 0, b"")
probe("clock_settime", 227, 0, params)
probe("swapon", 167, b"/nonexistent", 0)
'''


@pytest.fixture(scope="module")
def confined_dynod() -> Iterator[Dynod]:
    with running_dynod(dynos_extra=f'seccomp_unconfined_apps = ["{RELAXED}"]') as d:
        yield d


@pytest.fixture(scope="module")
def apps(confined_dynod: Dynod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    confined = f"t{secrets.token_hex(4)}"
    src = write_app(tmp_path_factory.mktemp("src"), "web: python3 web.py\n", {"probes.py": PROBES})
    for name in (confined, RELAXED):
        confined_dynod.ctl("apps:create", name)
        confined_dynod.ctl("deploy", str(src), "-a", name)
    yield confined, RELAXED
    for name in (confined, RELAXED):
        confined_dynod.ctl("apps:destroy", "-a", name, "--confirm", name, check=False)


def run(d: Dynod, app: str, script: str) -> subprocess.CompletedProcess[str]:
    return d.ctl("run", "-a", app, "--", "bash", "-c", script, check=False, timeout=90)


def probes(d: Dynod, app: str) -> dict[str, str]:
    out = run(d, app, "python3 /app/probes.py").stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_every_dyno_runs_under_the_seccomp_filter(confined_dynod: Dynod, apps: tuple[str, str]) -> None:
    confined, relaxed = apps
    assert "Seccomp:\t2" in run(confined_dynod, confined, "grep Seccomp: /proc/self/status").stdout
    assert "Seccomp:\t0" in run(confined_dynod, relaxed, "grep Seccomp: /proc/self/status").stdout


def test_denied_syscalls_fail_and_work_only_where_unconfined(confined_dynod: Dynod, apps: tuple[str, str]) -> None:
    confined, relaxed = apps
    got = probes(confined_dynod, confined)
    for name in ("io_uring_setup", "keyctl", "add_key", "bpf", "perf_event_open", "userfaultfd", "setns",
                 "personality_no_aslr", "fsopen", "unshare_user", "mount", "init_module", "clock_settime",
                 "swapon"):
        assert got.get(name) == "errno=1", (name, got)  # EPERM
    assert got["clone3"] == "errno=38"  # ENOSYS: glibc falls back to clone, whose flags are checked
    assert got["personality_query"] == "ok"
    control = probes(confined_dynod, relaxed)
    # Without the filter the same calls reach the kernel: io_uring and the keyring work for any uid.
    assert control["io_uring_setup"] == "ok" and control["keyctl"] == "ok" and control["add_key"] == "ok"
    assert control["unshare_user"] == "ok" and control["personality_no_aslr"] == "ok"


def test_unshare_user_namespace_is_refused(confined_dynod: Dynod, apps: tuple[str, str]) -> None:
    """The CVE-2024-1086 path: a user namespace gives a full capability set, then nf_tables."""
    confined, relaxed = apps
    attack = "unshare -U -r sh -c 'grep CapEff /proc/self/status; unshare -n true && echo netns-made'"
    result = run(confined_dynod, confined, attack)
    assert result.returncode != 0 and "netns-made" not in result.stdout
    assert "Operation not permitted" in result.stderr
    control = run(confined_dynod, relaxed, attack)
    assert "CapEff:\t000001ffffffffff" in control.stdout and "netns-made" in control.stdout
    # Threads and fork still use clone; only namespace flags are refused.
    assert run(confined_dynod, confined, "python3 -c 'import os; os.unshare' 2>/dev/null; "
               "python3 -c \"import threading; t=threading.Thread(target=print, args=('thread',)); "
               "t.start(); t.join()\"").stdout == "thread\n"


def test_mounts_are_refused_even_with_a_user_namespace_tool(confined_dynod: Dynod, apps: tuple[str, str]) -> None:
    confined, _ = apps
    result = run(confined_dynod, confined, "mkdir -p /tmp/m && unshare -Urm mount -t tmpfs none /tmp/m && echo mounted")
    assert "mounted" not in result.stdout and result.returncode != 0


def test_ordinary_programs_work_under_the_filter(confined_dynod: Dynod, apps: tuple[str, str]) -> None:
    confined, _ = apps
    script = (
        "set -e; cd /tmp; git init -q repo; cd repo; echo hi > f; git add f; "
        "git -c user.email=a@b -c user.name=a commit -qm one; git log --oneline | wc -l | sed 's/^/commits=/'; "
        "node -e \"require('fs').writeFileSync('/tmp/n', 'node'); console.log('node=' + "
        "require('fs').readFileSync('/tmp/n'))\"; "
        "python3 -c \"import concurrent.futures as f; print('threads=%d' % sum(f.ThreadPoolExecutor(4).map("
        "lambda x: x, range(10))))\"; "
        "python3 -c \"import subprocess; print('sub=' + subprocess.check_output(['echo', 'x']).decode().strip())\""
    )
    result = run(confined_dynod, confined, script)
    assert result.returncode == 0, result.stderr
    assert "commits=1" in result.stdout and "node=node" in result.stdout
    assert "threads=45" in result.stdout and "sub=x" in result.stdout


def test_a_web_dyno_serves_under_the_filter(confined_dynod: Dynod, apps: tuple[str, str]) -> None:
    confined, _ = apps
    confined_dynod.ctl("ps:scale", "web=1", "-a", confined)
    confined_dynod.up(confined, 1)
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{confined_dynod.http_port}/",
                                     headers={"Host": f"{confined}.localhost"})
    body = confined_dynod.wait_for(lambda: _try(request), what="a page from the confined web dyno")
    assert body == "web.1 hello\n"
    confined_dynod.ctl("ps:scale", "web=0", "-a", confined)


def _try(request) -> str | None:  # type: ignore[no-untyped-def]
    import urllib.request

    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def test_a_dyno_sees_its_own_memory_limit_and_not_the_host_hierarchy(confined_dynod: Dynod,
                                                                      apps: tuple[str, str]) -> None:
    confined, _ = apps
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/pids/pids.max; "
              "ls /sys; ls /sys/fs/cgroup | tr '\\n' ' '; echo; "
              "find /sys/fs/cgroup/memory -mindepth 1 -type d | wc -l | sed 's/^/subgroups=/'; "
              "cat /proc/self/cgroup | grep memory; "
              "echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null && echo wrote-limit; true")
    lines = run(confined_dynod, confined, script).stdout.splitlines()
    # A standard-1X dyno: 512 MB quota, the hard limit at 2x (R15), 256 pids (the dyno size's).
    assert int(lines[0]) == 2 * 512 * 1024 * 1024, lines
    assert lines[2] == "fs"
    assert "memory" in lines[3] and "pids" in lines[3] and "cpuset" not in lines[3]
    assert "subgroups=0" in lines  # the dyno's own group is the root of what it sees
    assert any(line.endswith(":memory:/") for line in lines), lines  # its cgroup namespace is rooted there
    assert "wrote-limit" not in lines


def test_the_filter_applies_to_builds(confined_dynod: Dynod, tmp_path: Path) -> None:
    app = f"t{secrets.token_hex(4)}"
    confined_dynod.ctl("apps:create", app)
    try:
        # An npm postinstall: app code that every Node.js build runs.
        package = {"name": "probe", "version": "1.0.0", "scripts": {"postinstall": "sh ./probe.sh"}}
        src = write_app(tmp_path / "src", "web: python3 web.py\n", {
            "package.json": json.dumps(package),
            "probe.sh": "grep Seccomp: /proc/self/status | sed 's/^/build-/'\n"
                        "unshare -U -r true 2>&1 && echo build-userns || echo build-no-userns\n",
        })
        out = confined_dynod.ctl("deploy", str(src), "-a", app).stdout
        assert "build-Seccomp:\t2" in out and "build-no-userns" in out and "build-userns\n" not in out
    finally:
        confined_dynod.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
