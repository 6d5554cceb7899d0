"""dynod's side of the spawner protocol, on trio.

``SpawnerClient.connect_or_start`` finds a running spawner (re-adoption after a dynod restart) or
starts one in its own session so that it outlives dynod. Messages the spawner sends on its own
(started, exited) arrive through ``events()``; replies to a spawn come back to its caller. Every
message is one of dynod.linux.spawn_messages, encoded and decoded there.
"""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from . import spawn_messages as m
from .dyno_exec import ExecSpec
from .dyno_init import DynoSpec, PreparedNet

MAX_MESSAGE = 1 << 20
MAX_FDS = 8


@dataclass
class SpawnedDyno:
    id: str
    pid: int
    fds: dict[str, int]  # kind ("stdout", "stderr", "stdin", "pty") -> fd owned by the caller
    # Its veth made by the spawner already (the spec's net named the bridge). Keyword-only: an
    # AdoptedDyno's own fields keep their places.
    wired: bool = field(default=False, kw_only=True)


@dataclass
class AdoptedDyno(SpawnedDyno):
    status: int | None = None
    error: str = ""
    started: bool = False
    spawned_at: float = 0.0


# What the spawner says on its own about a dyno: its init was exec'd, or reaped.
SpawnerEvent = m.Started | m.Exited


class SpawnerError(Exception):
    pass


class SpawnerClient:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._send_lock = trio.Lock()
        self._waiting: dict[str, trio.MemorySendChannel[tuple[m.Reply, list[int]]]] = {}
        self._events_send, self._events_recv = trio.open_memory_channel[SpawnerEvent](10000)
        self._adopted: list[AdoptedDyno] = []
        self._hello_done = trio.Event()
        self.closed = trio.Event()

    @classmethod
    async def connect_or_start(cls, socket_path: Path, log_path: Path) -> SpawnerClient:
        sock = await _try_connect(socket_path)
        if sock is None:
            with open(log_path, "ab") as log:
                subprocess.Popen(
                    [sys.executable, "-m", "dynod.linux.spawner", "--socket", str(socket_path)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                    close_fds=True,
                )
            with trio.move_on_after(10):
                while sock is None:
                    await trio.sleep(0.02)
                    sock = await _try_connect(socket_path)
            if sock is None:
                raise SpawnerError(f"the spawner did not come up; see {log_path}")
        return cls(sock)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read messages until the connection ends; call in a nursery, then ``hello()``."""
        task_status.started()
        try:
            while True:
                message, fds = await self._receive()
                if message is None:
                    break
                self._dispatch(message, fds)
        finally:
            self.closed.set()
            await self._events_send.aclose()

    def _dispatch(self, data: object, fds: list[int]) -> None:
        try:
            message = m.decode_reply(data)
        except m.MessageError:
            message = None  # from a newer spawner, or garbled: nobody waits for it
        if isinstance(message, m.Started | m.Exited):
            self._events_send.send_nowait(message)
        elif isinstance(message, m.DynoReport):
            self._adopted.append(AdoptedDyno(
                message.id, message.pid, dict(zip(message.kinds, fds, strict=False)), message.status,
                message.error, message.started, message.spawned_at))
            return
        elif isinstance(message, m.HelloDone):
            self._hello_done.set()
        elif isinstance(message, m.Spawned | m.Preforked | m.Cleared | m.Refused):
            waiter = self._waiting.pop(message.id or "", None)
            if waiter is not None:
                waiter.send_nowait((message, fds))
                return
        for fd in fds:  # fds that no one takes
            os.close(fd)

    async def _receive(self) -> tuple[Any, list[int]]:
        fds = array.array("i")
        try:
            data, ancdata, _flags, _addr = await self._sock.recvmsg(
                MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
        except OSError:
            return None, []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        if not data:
            return None, list(fds)
        return json.loads(data), list(fds)

    async def _send(self, message: m.Request) -> None:
        async with self._send_lock:
            try:
                await self._sock.send(json.dumps(message.to_json()).encode())
            except OSError as exc:
                raise SpawnerError(f"the spawner went away: {exc}") from None

    async def hello(self) -> list[AdoptedDyno]:
        """Every dyno the spawner still knows, with fresh copies of its fds (re-adoption)."""
        self._adopted = []
        self._hello_done = trio.Event()
        await self._send(m.Hello())
        await self._hello_done.wait()
        return self._adopted

    async def spawn(self, spec: DynoSpec) -> SpawnedDyno:
        return self._spawned(spec.id, *await self._request(spec.id, m.Spawn(spec)))

    async def exec(self, spec: ExecSpec) -> SpawnedDyno:
        """A process entering a running dyno (dynod.linux.dyno_exec); reported as a dyno is."""
        return self._spawned(spec.id, *await self._request(spec.id, m.Exec(spec)))

    async def clear_keyrings(self, uid: int, gid: int) -> None:
        """Empty the kernel keyrings of ``uid`` (a destroyed app's): dynod.linux.keyring."""
        request = m.ClearKeyrings(uid, gid)
        await self._request(request.id, request)

    async def prefork(self, pool_id: str, mnt: str = "", tmpfs_mb: int = 0, net: PreparedNet | None = None) -> int:
        """Fork a warm dyno now (it waits for ``assign``); returns its pid. With ``mnt`` it
        prepares its root's tmpfs (of ``tmpfs_mb``), /proc and /dev meanwhile; with ``net`` it
        addresses that interface once told ``wired``."""
        reply, fds = await self._request(pool_id, m.Prefork(pool_id, mnt, tmpfs_mb, net))
        for fd in fds:
            os.close(fd)
        if not isinstance(reply, m.Preforked):
            raise SpawnerError(f"the spawner answered a prefork with {reply.op!r}")
        return reply.pid

    async def assign(self, pool_id: str, spec: DynoSpec) -> SpawnedDyno:
        """Hand a warm dyno its spec: it becomes dyno ``spec.id``; then ``go`` as for a spawn."""
        return self._spawned(spec.id, *await self._request(spec.id, m.Assign(pool_id, spec)))

    @staticmethod
    def _spawned(dyno_id: str, reply: m.Reply, fds: list[int]) -> SpawnedDyno:
        if not isinstance(reply, m.Spawned):
            for fd in fds:
                os.close(fd)
            raise SpawnerError(f"the spawner answered with {reply.op!r}, not spawned")
        return SpawnedDyno(dyno_id, reply.pid, dict(zip(reply.kinds, fds, strict=False)), wired=reply.wired)

    async def _request(self, key: str, request: m.Request) -> tuple[m.Reply, list[int]]:
        send, recv = trio.open_memory_channel[tuple[m.Reply, list[int]]](1)
        self._waiting[key] = send
        await self._send(request)
        reply, fds = await recv.receive()
        if isinstance(reply, m.Refused):
            for fd in fds:
                os.close(fd)
            raise SpawnerError(reply.message or f"{request.op} failed")
        return reply, fds

    async def wired(self, pool_id: str) -> None:
        """A warm dyno forked with a net is in its cgroups and has its veth."""
        await self._send(m.Wired(pool_id))

    async def go(self, dyno_id: str) -> None:
        await self._send(m.Go(dyno_id))

    async def abort(self, dyno_id: str) -> None:
        await self._send(m.Abort(dyno_id))

    async def kill(self, dyno_id: str, sig: int) -> None:
        await self._send(m.Kill(dyno_id, int(sig)))

    async def forget(self, dyno_id: str) -> None:
        await self._send(m.Forget(dyno_id))

    async def shutdown(self, force: bool = False) -> None:
        await self._send(m.Shutdown(force))

    def events(self) -> AsyncIterator[SpawnerEvent]:
        return self._events_recv

    def close(self) -> None:
        self._sock.close()


async def _try_connect(path: Path) -> trio.socket.SocketType | None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        await sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock
