"""Kernel-side isolation leftovers (issue 9), against the real kernel through a real dynod: the pids
bounds per dyno and for all dynos together, what a dyno's mountinfo says about the host, and each
app's kernel keyring across a destroyed app's uid given to a new one."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from dynod.linux.cgroups import detect

from .conftest import Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration

FORKER = (
    "import os, signal, sys, time\nkids = 0\ntry:\n    while kids < 400:\n        if os.fork() == 0:\n"
    "            signal.pause()\n        kids += 1\nexcept OSError:\n    pass\nprint('forked', kids, flush=True)\n"
    "time.sleep(100000)\n"
)


def _forked(dynod: Dynod, app: str) -> list[int]:
    return [int(line.split("forked")[1].split()[0]) for line in dynod.logs(app).splitlines() if ": forked " in line]


def test_a_dynos_pids_limit_is_capped_and_all_dynos_are_bounded_together(tmp_path: Path) -> None:
    with running_dynod(dynos_extra="pids_max = 64\npids_total = 100") as dynod:
        app = "pidsbound"
        dynod.ctl("apps:create", app)
        try:
            dynod.ctl("deploy", str(write_app(tmp_path / "src", "worker: python3 forker.py\n",
                                              {"forker.py": FORKER})), "-a", app)
            # performance-M says 16384 processes; the cap says 64.
            dynod.ctl("ps:scale", "worker=1:performance-M", "-a", app)
            first = dynod.wait_for(lambda: _forked(dynod, app), timeout=60, what="the first dyno full")
            assert 50 <= first[0] < 64, first  # tini, bash/python count too
            pids_root = next(r for r in detect(parent=None, name=dynod.cgroup_name).roots() if "/pids/" in r)
            assert Path(pids_root, "pids.max").read_text().strip() == "100"
            # A second dyno would have 64 too, but only what is left of the 100 remains.
            dynod.ctl("ps:scale", "worker=2:performance-M", "-a", app)
            both = dynod.wait_for(lambda: len(_forked(dynod, app)) >= 2 and _forked(dynod, app), timeout=60,
                                  what="the second dyno full")
            assert both[1] < first[0] and sum(both) <= 100, both
            assert int(Path(pids_root, "pids.current").read_text()) <= 100
        finally:
            dynod.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


def test_the_default_bounds_hold_performance_l_below_the_hosts_pid_max(dynod: Dynod, app: str,
                                                                       tmp_path: Path) -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    pids_root = next(r for r in detect(parent=None, name=dynod.cgroup_name).roots() if "/pids/" in r)
    assert int(Path(pids_root, "pids.max").read_text()) == pid_max // 2
    dynod.ctl("deploy", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", app)
    out = dynod.ctl("run", "-s", "performance-L", "-a", app, "--", "cat", "/sys/fs/cgroup/pids/pids.max").stdout
    assert int(out) == 8192, out  # performance-L says 32768, the default [dynos] pids_max caps it


def test_a_dynos_mountinfo_names_no_host_path_of_its_layers(dynod: Dynod, app: str, tmp_path: Path) -> None:
    dynod.ctl("deploy", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", app)
    out = dynod.ctl("run", "-a", app, "--", "cat", "/proc/self/mountinfo", "/proc/self/mounts").stdout
    root_line = next(line for line in out.splitlines() if " / / " in line and "overlay" in line)
    assert "lowerdir=l0:l1,upperdir=upper,workdir=work" in root_line, root_line
    for host_path in (str(dynod.root), "/var/lib/dynod", str(Path("/var/lib/dynod/stacks").resolve()), "/run/dynod"):
        assert host_path not in out, (host_path, out)


def test_a_new_app_given_a_destroyed_apps_uid_finds_none_of_its_keys(tmp_path: Path) -> None:
    from .test_isolation_uid import KEYS

    old, new = f"ko{secrets.token_hex(3)}", f"kn{secrets.token_hex(3)}"
    uid_first = 2_200_000_000 + int(secrets.token_hex(2), 16) * 10  # a range of this test's own
    src = write_app(tmp_path / "src", "web: python3 web.py\n", {"keys.py": KEYS})

    def run(d: Dynod, app: str, script: str) -> str:
        result = d.ctl("run", "-a", app, "--", "bash", "-c", script, check=False, timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    # Both unconfined: the keyring calls reach the kernel, and only the uid's keyrings hold a key.
    with running_dynod(dynos_extra=f'seccomp_unconfined_apps = ["{old}", "{new}"]\n'
                                   f"uid_first = {uid_first}\nuid_count = 10") as dynod:
        dynod.ctl("apps:create", old)
        dynod.ctl("deploy", str(src), "-a", old)
        try:
            assert "added" in run(dynod, old, "echo uid=$(id -u); python3 /app/keys.py add")
            out = run(dynod, old, "echo uid=$(id -u); python3 /app/keys.py find")
            assert "found s3cr3t" in out  # the control: the key outlives the dyno that added it
            uid = int(out.split("uid=")[1].split()[0])
        finally:
            dynod.ctl("apps:destroy", "-a", old, "--confirm", old)
        dynod.ctl("apps:create", new)
        try:
            dynod.ctl("deploy", str(src), "-a", new)
            out = run(dynod, new, "echo uid=$(id -u); python3 /app/keys.py find")
            assert f"uid={uid}" in out  # the ledger gave it the destroyed app's uid (the lowest free)...
            assert "not found errno=126" in out, out  # ...and nothing of its keyring (ENOKEY)
        finally:
            run(dynod, new, "python3 /app/keys.py clear")
            dynod.ctl("apps:destroy", "-a", new, "--confirm", new, check=False)
