"""A warm dyno prepares the spec-free part of its root before its spec (dyno_init.prepare_root),
against a spawner of its own: it runs once assigned; an assign whose spec asks for another mnt or
tmpfs size than it was prepared for is refused (dynod then starts that dyno cold); a warm dyno
that cannot prepare dies with one line naming the step.
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
from pathlib import Path

import pytest
import trio

from dynod.linux.dyno_init import DynoSpec
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


async def test_a_prepared_warm_dyno_runs_and_refuses_a_spec_it_was_not_prepared_for(stack_rootfs: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    root = Path(tempfile.mkdtemp(prefix="dynod-prepared-"))
    (root / "mnt").mkdir()
    (root / "slug" / "app").mkdir(parents=True)
    token = secrets.token_hex(3)
    client = await SpawnerClient.connect_or_start(root / "spawner.sock", root / "spawner.log")
    # The spawner is this process's child (its Popen is dropped): reaped below, so that no test
    # after this one finds it among this process's children.
    spawner_pid = struct.unpack("3i", client._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            try:
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
        subprocess.run(["rm", "-rf", str(root)])
