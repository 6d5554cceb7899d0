"""clone3 with CLONE_INTO_CGROUP against the real kernel: a child born PID 1 of new pid and net
namespaces, already in its cgroup2 group at its first instruction, with no cgroup.procs write."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import trio

from dynod.linux.cgroups import CgroupLimits, detect
from dynod.linux.cgroups.birth import birth
from dynod.linux.cgroups.paths import read_mounts
from dynod.linux.dyno_init import DynoSpec
from dynod.linux.spawner_client import SpawnerClient

pytestmark = pytest.mark.integration

# Run in a process of its own: clone3 is for a single-threaded caller (the spawner), as this is.
CHILD = """
import json, os, sys
from dynod.linux import syscalls as sc
from dynod.linux.cgroups.birth import birth, open_group
from dynod.linux.cgroups.paths import read_mounts
plan = birth([sys.argv[1]], read_mounts())
fd = open_group(plan.into)
r, w = os.pipe()
pid = sc.clone3(sc.CLONE_NEWPID | sc.CLONE_NEWNET, fd)
if pid == 0:
    seen = {"pid": os.getpid(), "cgroup": open("/proc/self/cgroup").read().splitlines()[-1],
            "netns": os.readlink("/proc/self/ns/net")}
    os.write(w, json.dumps(seen).encode())
    os._exit(7)
os.close(w)
seen = json.loads(os.read(r, 4096))
_, status = os.waitpid(pid, 0)
print(json.dumps({**seen, "host_pid": pid, "status": os.waitstatus_to_exitcode(status),
                  "parent_netns": os.readlink("/proc/self/ns/net"), "joins": list(plan.joins)}))
"""


def test_clone3_makes_the_dyno_in_its_cgroup2_group() -> None:
    mounts = read_mounts()
    if mounts.v2 is None:
        pytest.skip("no cgroup2 mount on this host")
    parent = mounts.v2.directory(mounts.v2.own_path)
    group = os.path.join(parent, f"dynod-test-birth-{secrets.token_hex(3)}")
    try:
        os.mkdir(group)
    except OSError as exc:
        pytest.skip(f"cgroup2 not writable here: {exc}")
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, os.path.join(group, "cgroup.procs")],
                             capture_output=True, text=True, timeout=60, cwd=os.getcwd())
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen["pid"] == 1  # PID 1 of its own namespace, as a dyno is
        assert seen["netns"] != seen["parent_netns"]
        cgroup_path = "/" + os.path.relpath(group, mounts.v2.mountpoint)
        assert seen["cgroup"] == f"0::{cgroup_path}"  # there before it ran a line of its own
        assert seen["status"] == 7 and seen["host_pid"] > 1
        assert seen["joins"] == []  # nothing left to write
        with open(os.path.join(group, "cgroup.events")) as f:
            assert "populated 0" in f.read()  # reaped: the group is empty again
    finally:
        os.rmdir(group)
    assert not os.path.exists(group)


def test_on_this_host_the_backend_groups_decide_the_birth() -> None:
    # Whatever the host: the v1 hierarchies' files are never taken for the cgroup2 group.
    mounts = read_mounts()
    v1 = [os.path.join(h.mountpoint, "x", "cgroup.procs") for h in mounts.v1.values()]
    assert birth(v1, mounts).joins == tuple(v1)


async def test_the_spawner_forks_a_dyno_into_its_cgroup2_group_and_it_joins_v1_itself(stack_rootfs: Path) -> None:
    mounts = read_mounts()
    if mounts.v2 is None:
        pytest.skip("no cgroup2 mount on this host")
    token = secrets.token_hex(3)
    group = os.path.join(mounts.v2.directory(mounts.v2.own_path), f"dynod-test-birth-{token}")
    try:
        os.mkdir(group)
    except OSError as exc:
        pytest.skip(f"cgroup2 not writable here: {exc}")
    backend = detect(parent=None, name=f"dynod-test-birth-{token}")
    root = Path(tempfile.mkdtemp(prefix="dynod-birth-"))
    (root / "mnt").mkdir()
    (root / "slug" / "app").mkdir(parents=True)
    cg = backend.create("d1", CgroupLimits(memory_max=256 << 20, memory_high=128 << 20, pids_max=64, cpu_weight=100))
    procs = [*(cg.procs_files() if backend.kind == "v1" else []), os.path.join(group, "cgroup.procs")]
    client = await SpawnerClient.connect_or_start(root / "spawner.sock", root / "spawner.log")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            try:
                spawned = await client.spawn(DynoSpec.from_json({
                    "id": "d1", "hostname": "dyno-test", "argv": ["/bin/true"], "env": {"PATH": "/usr/bin:/bin"},
                    "lower": [str(root / "slug"), str(stack_rootfs)], "mnt": str(root / "mnt"),
                    "cgroup_procs": procs, "uid": 61000, "gid": 61000}))
                # Before it may run: in the cgroup2 group (born there: test_the_fork_itself_... shows how).
                with open(f"/proc/{spawned.pid}/cgroup") as f:
                    assert f"0::/{os.path.relpath(group, mounts.v2.mountpoint)}" in f.read().splitlines()
                await client.go("d1")
                async for event in client.events():
                    if event.op == "exited":
                        break
                assert event.status == 0 and event.error == ""
                if backend.kind == "v1":  # the v1 moves it made itself, before its exit
                    assert cg.pids() == []
                await client.forget("d1")
                for fd in spawned.fds.values():
                    os.close(fd)
            finally:
                await client.shutdown(force=True)
                nursery.cancel_scope.cancel()
    finally:
        client.close()
        for _ in range(250):
            if not (root / "spawner.sock").exists():
                break
            time.sleep(0.02)
        cg.remove()
        backend.remove_subtree()
        os.rmdir(group)
        subprocess.run(["rm", "-rf", str(root)])
    assert not os.path.exists(group)


FORK_INTO = """
import os, sys
from dynod.linux.cgroups.birth import birth
from dynod.linux.cgroups.paths import read_mounts
from dynod.linux.spawner import Spawner
spawner = Spawner(sys.argv[2])
spawner.mypid = os.getpid()
procs = [sys.argv[1], *sys.argv[3:]]
pid, joins = spawner._fork_into(birth(procs, read_mounts()), procs)
if pid == 0:  # what the dyno is handed: its cgroup already, and only the v1 files to write
    here = open("/proc/self/cgroup").read().splitlines()[-1]
    os._exit(0 if here.endswith(os.path.dirname(sys.argv[1])[-20:]) and joins == sys.argv[3:] else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), spawner.clone_into)
"""


def test_the_fork_itself_puts_the_child_in_the_group_and_leaves_it_only_the_v1_files(tmp_path: Path) -> None:
    mounts = read_mounts()
    if mounts.v2 is None:
        pytest.skip("no cgroup2 mount on this host")
    group = os.path.join(mounts.v2.directory(mounts.v2.own_path), f"dynod-test-birth-{secrets.token_hex(3)}")
    try:
        os.mkdir(group)
    except OSError as exc:
        pytest.skip(f"cgroup2 not writable here: {exc}")
    try:
        v1 = [os.path.join(h.mountpoint, "not-written", "cgroup.procs") for h in mounts.v1.values()]
        out = subprocess.run([sys.executable, "-c", FORK_INTO, os.path.join(group, "cgroup.procs"),
                              str(tmp_path / "unused.sock"), *v1], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["0", "True"]
    finally:
        os.rmdir(group)
