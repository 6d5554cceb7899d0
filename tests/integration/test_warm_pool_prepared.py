"""A warm dyno prepares the spec-free part of its root before its spec (dyno_init.prepare_root),
against a spawner of its own: it runs once assigned; an assign whose spec asks for another mnt or
tmpfs size than it was prepared for is refused (dynod then starts that dyno cold); a warm dyno
that cannot prepare dies with one line naming the step. One forked with a net addresses its
interface as soon as it is told it is wired, before any spec, and refuses a spec for another address.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import trio

from dynod.linux.dyno_init import DynoSpec, PreparedNet
from dynod.linux.spawn_messages import Exited
from dynod.linux.spawner_client import SpawnerClient, SpawnerError

pytestmark = pytest.mark.integration


def _spec(dyno_id: str, root: Path, stack: Path, *, mnt: Path, tmpfs_mb: int = 64) -> DynoSpec:
    return DynoSpec.from_json({
        "id": dyno_id, "hostname": "dyno-test", "argv": ["/bin/sh", "-c", "test -c /dev/null && test -d /proc/1"],
        "env": {"PATH": "/usr/bin:/bin"}, "lower": [str(root / "slug"), str(stack)], "mnt": str(mnt),
        "cgroup_procs": [], "uid": 61000, "gid": 61000, "tmpfs_mb": tmpfs_mb})


async def _exit_of(client: SpawnerClient, dyno_id: str) -> Exited:
    with trio.fail_after(20):
        async for event in client.events():
            if isinstance(event, Exited) and event.id == dyno_id:
                return event
    raise AssertionError(f"no exit of {dyno_id}")


async def _with_spawner(root: Path, body: Callable[[SpawnerClient], Awaitable[None]]) -> None:
    """Run ``body`` against a spawner of the test's own (in ``root``), shut down and reaped after."""
    client = await SpawnerClient.connect_or_start(root / "spawner.sock", root / "spawner.log")
    # The spawner is this process's child (its Popen is dropped): reaped below, so that no test
    # after this one finds it among this process's children.
    spawner_pid = struct.unpack("3i", client._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            try:
                await body(client)
            finally:
                await client.shutdown(force=True)
                nursery.cancel_scope.cancel()
    finally:
        client.close()
        for _ in range(500):
            try:
                if os.waitpid(spawner_pid, os.WNOHANG)[0] == spawner_pid:
                    break
            except ChildProcessError:  # reaped already (by subprocess's own bookkeeping)
                break
            time.sleep(0.02)
        else:
            os.kill(spawner_pid, signal.SIGKILL)
            os.waitpid(spawner_pid, 0)


def _dyno_root(prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / "mnt").mkdir()
    (root / "slug" / "app").mkdir(parents=True)
    return root


async def test_a_prepared_warm_dyno_runs_and_refuses_a_spec_it_was_not_prepared_for(stack_rootfs: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    root = _dyno_root("dynod-prepared-")
    token = secrets.token_hex(3)

    async def body(client: SpawnerClient) -> None:
        # Prepared for root/mnt at 64 MiB: a spec for another size or place is refused,
        # and the warm dyno stays in the pool, whole.
        pool = f"warm.{token}a"
        await client.prefork(pool, str(root / "mnt"), 64)
        for wrong in (_spec(f"d.{token}1", root, stack_rootfs, mnt=root / "mnt", tmpfs_mb=128),
                      _spec(f"d.{token}1", root, stack_rootfs, mnt=root / "slug")):
            with pytest.raises(SpawnerError, match="was prepared for"):
                await client.assign(pool, wrong)
        spawned = await client.assign(pool, _spec(f"d.{token}1", root, stack_rootfs, mnt=root / "mnt"))
        await client.go(f"d.{token}1")
        event = await _exit_of(client, f"d.{token}1")
        assert (event.status, event.error) == (0, ""), event  # its /proc and /dev were moved in
        await client.forget(f"d.{token}1")
        for fd in spawned.fds.values():
            os.close(fd)

        # A warm dyno that cannot prepare its root says which step, and dies in the pool.
        broken = f"warm.{token}b"
        await client.prefork(broken, str(root / "no-such-dir"), 64)
        event = await _exit_of(client, broken)
        assert event.status != 0 and "the dyno's tmpfs" in event.error, event
        await client.forget(broken)

        # One discarded before use exits quietly.
        unused = f"warm.{token}c"
        await client.prefork(unused, str(root / "mnt"), 64)
        await client.kill(unused, signal.SIGKILL)
        await _exit_of(client, unused)
        await client.forget(unused)

    try:
        await _with_spawner(root, body)
    finally:
        subprocess.run(["rm", "-rf", str(root)])


def _net_of(pid: int) -> str:
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                          capture_output=True, text=True).stdout


async def test_a_warm_dyno_addresses_its_interface_once_wired_and_refuses_another_address(stack_rootfs: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    root = _dyno_root("dynod-prepared-net-")
    token = secrets.token_hex(3)
    host_end = f"dyt{token}"
    net = PreparedNet("eth0", "198.18.254.7", 24, "198.18.254.1")

    async def body(client: SpawnerClient) -> None:
        pool = f"warm.{token}n"
        pid = await client.prefork(pool, str(root / "mnt"), 64, net)
        subprocess.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", str(pid)],
                       check=True)
        await trio.sleep(0.3)
        assert "198.18.254.7" not in _net_of(pid)  # not before dynod says it is wired
        await client.wired(pool)
        with trio.fail_after(10):
            while "198.18.254.7/24" not in _net_of(pid):
                await trio.sleep(0.02)
        # Its spec must name the address it has: another is refused, and it stays whole.
        spec = _spec(f"d.{token}1", root, stack_rootfs, mnt=root / "mnt")
        with pytest.raises(SpawnerError, match="was prepared for the network"):
            await client.assign(pool, replace(spec, net={**asdict(net), "address": "198.18.254.8"}))
        # The one it was wired for runs with that address and the default route, both made
        # while it waited (/proc/net/route gives the gateway 198.18.254.1 little-endian in hex).
        spec = replace(spec, net={**asdict(net), "on_bridge": "none"}, argv=[
            "/bin/sh", "-c", "grep -q 198.18.254.7 /proc/net/fib_trie && grep -q 01FE12C6 /proc/net/route"])
        spawned = await client.assign(pool, spec)
        await client.go(spec.id)
        event = await _exit_of(client, spec.id)
        assert (event.status, event.error) == (0, ""), event
        await client.forget(spec.id)
        for fd in spawned.fds.values():
            os.close(fd)

    try:
        await _with_spawner(root, body)
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)  # gone with its netns, normally
        subprocess.run(["rm", "-rf", str(root)])
