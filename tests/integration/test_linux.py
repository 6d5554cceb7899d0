"""The kernel-facing layer on its own: cgroups (both backends), the spawner, the veth wiring."""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import trio

from dynod.linux.cgroups import CgroupLimits, detect
from dynod.linux.cgroups.paths import read_mounts
from dynod.linux.cgroups.v2 import CgroupV2
from dynod.linux.dyno_init import DynoSpec
from dynod.linux.net import Network
from dynod.linux.spawner_client import SpawnerClient

from .conftest import free_third_octet

pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture
def backend():  # type: ignore[no-untyped-def]
    name = f"dynod-test-{secrets.token_hex(3)}"
    b = detect(parent=None, name=name)
    yield b
    b.remove_subtree()
    assert not any(os.path.exists(r) for r in b.roots())


def _join(files: list[str]):  # type: ignore[no-untyped-def]
    def preexec() -> None:
        for f in files:
            with open(f, "w") as fh:
                fh.write("0")
    return preexec


def test_memory_limit_oom_kill_is_seen_through_the_event_fd(backend) -> None:  # type: ignore[no-untyped-def]
    cg = backend.create("hog", CgroupLimits(memory_max=64 * MiB, memory_high=32 * MiB, pids_max=16, cpu_weight=100))
    watch = cg.watch_memory()
    try:
        proc = subprocess.Popen([sys.executable, "-c", "x = bytearray(200 << 20)"], preexec_fn=_join(cg.procs_files()))
        assert proc.wait() == -signal.SIGKILL
        ready, _, _ = select.select([watch.fileno()], [], [], 5)
        assert ready, "no memory event after an OOM kill"
        assert cg.oom_kills() >= 1
    finally:
        watch.close()
        cg.remove()


def test_a_warm_group_is_renamed_with_its_process_and_given_new_limits(backend) -> None:  # type: ignore[no-untyped-def]
    warm = backend.create("warm.x", CgroupLimits(memory_max=64 * MiB, memory_high=64 * MiB, pids_max=4,
                                                 cpu_weight=100))
    proc = subprocess.Popen(["sleep", "60"], preexec_fn=_join(warm.procs_files()))
    try:
        # Growing past the old limit: v1 wants memsw raised before the memory limit.
        cg = backend.rename(warm, "app.web.1.abc", CgroupLimits(memory_max=1024 * MiB, memory_high=512 * MiB,
                                                                 pids_max=256, cpu_weight=200))
        assert backend.names() == ["app.web.1.abc"]
        assert cg.pids() == [proc.pid]
        assert cg.quota == 512 * MiB
        for files in cg.procs_files():
            assert os.path.exists(files)
    finally:
        proc.kill()
        proc.wait()
    cg.remove()


def test_pids_limit_refuses_forks(backend) -> None:  # type: ignore[no-untyped-def]
    cg = backend.create("forks", CgroupLimits(memory_max=256 * MiB, memory_high=128 * MiB, pids_max=8, cpu_weight=100))
    script = (
        "import os, time\nn = 0\ntry:\n    for _ in range(50):\n        if os.fork() == 0:\n"
        "            time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", script], preexec_fn=_join(cg.procs_files()),
                             capture_output=True, text=True, timeout=30).stdout
        assert int(out) < 8
    finally:
        cg.kill_all()
        cg.remove()


def test_v2_backend_groups_kill_and_remove_on_the_unified_mount() -> None:
    mounts = read_mounts()
    if mounts.v2 is None:
        pytest.skip("no cgroup2 mount")
    backend = CgroupV2(mounts, parent=None, name=f"dynod-test-{secrets.token_hex(3)}")
    try:
        cg = backend.create("d1", CgroupLimits(memory_max=64 * MiB, memory_high=32 * MiB, pids_max=16, cpu_weight=100))
    except PermissionError:
        pytest.skip("cgroup2 not writable here")
    proc = subprocess.Popen(["sleep", "60"], preexec_fn=_join(cg.procs_files()))
    try:
        assert cg.pids() == [proc.pid]
        assert backend.names() == ["d1"]
        # cgroup2 has no rename (the kernel gives it no rename op): no warm pool on v2 hosts.
        assert not backend.can_rename
        with pytest.raises(PermissionError):
            os.rename(cg.directory, os.path.join(os.path.dirname(cg.directory), "d2"))
        cg.kill_all()
        assert proc.wait(timeout=5) == -signal.SIGKILL
        cg.remove()
    finally:
        if proc.poll() is None:
            proc.kill()
        backend.remove_subtree()
    assert not os.path.exists(backend.roots()[0])


async def test_spawner_makes_an_isolated_networked_dyno(stack_rootfs: Path, backend) -> None:  # type: ignore[no-untyped-def]
    root = Path(tempfile.mkdtemp(prefix="dynod-sp-"))
    (root / "mnt").mkdir()
    (root / "slug" / "app").mkdir(parents=True)
    token = secrets.token_hex(2)
    network = Network(f"dyt{token}", f"198.19.{free_third_octet()}.0/24")
    cg = backend.create("d1", CgroupLimits(memory_max=256 * MiB, memory_high=128 * MiB, pids_max=64, cpu_weight=100))
    client = await SpawnerClient.connect_or_start(root / "spawner.sock", root / "spawner.log")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            try:
                await _spawn_and_check(client, network, cg, root, stack_rootfs)
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
        await network.teardown()
        network.close()
        subprocess.run(["rm", "-rf", str(root)])
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"dyt{token}" not in links


async def _spawn_and_check(client: SpawnerClient, network: Network, cg, root: Path,  # type: ignore[no-untyped-def]
                           stack_rootfs: Path) -> None:
    await network.ensure_bridge()
    address = network.pool.allocate()
    script = ("echo pid=$$; cat /proc/net/route | awk 'NR>1{print \"route=\"$1\":\"$2}'; "
              "grep -c . /proc/self/mounts | sed 's/^/mounts=/'; hostname")
    spawned = await client.spawn(DynoSpec.from_json({
        "id": "d1", "hostname": "dyno-test", "argv": ["/usr/bin/tini", "-g", "--", "/bin/bash", "-c", script],
        "env": {"PATH": "/usr/bin:/bin"}, "lower": [str(root / "slug"), str(stack_rootfs)],
        "mnt": str(root / "mnt"), "cgroup_procs": cg.procs_files(), "uid": 61000, "gid": 61000,
        "net": {"ifname": "eth0", "address": address, "prefix": network.pool.prefix,
                "gateway": network.pool.gateway},
    }))
    await network.attach(address, spawned.pid)
    await client.go("d1")
    events = client.events()
    started = time.monotonic()
    async for event in events:
        if event.op == "exited":
            break
        assert time.monotonic() - started < 30
    assert event.status == 0 and event.error == ""
    out = os.read(spawned.fds["stdout"], 65536).decode()
    assert "pid=2" in out  # tini is 1, bash is 2: a PID namespace of its own
    assert "route=eth0:00000000" in out  # the default route goes out through its veth
    assert "dyno-test" in out
    await client.forget("d1")
    for fd in spawned.fds.values():
        os.close(fd)
