"""dynod's side of the spawner protocol, on trio.

``SpawnerClient.connect_or_start`` finds a running spawner (re-adoption after a dynod restart) or
starts one in its own session so that it outlives dynod. Messages the spawner sends on its own
(started, exited) arrive through ``events()``; replies to a spawn come back to its caller.
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

MAX_MESSAGE = 1 << 20
MAX_FDS = 8


@dataclass
class SpawnedDyno:
    id: str
    pid: int
    fds: dict[str, int]  # kind ("stdout", "stderr", "stdin", "pty") -> fd owned by the caller


@dataclass
class AdoptedDyno(SpawnedDyno):
    status: int | None = None
    error: str = ""
    started: bool = False
    spawned_at: float = 0.0


@dataclass
class SpawnerEvent:
    op: str  # "started" | "exited"
    id: str
    pid: int
    status: int | None = None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class SpawnerError(Exception):
    pass


class SpawnerClient:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._send_lock = trio.Lock()
        self._waiting: dict[str, trio.MemorySendChannel[tuple[dict[str, Any], list[int]]]] = {}
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

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message.get("op")
        if op in ("started", "exited"):
            event = SpawnerEvent(op, message["id"], message["pid"], message.get("status"),
                                 message.get("error", ""))
            self._events_send.send_nowait(event)
        elif op == "dyno":
            kinds = message["kinds"]
            self._adopted.append(AdoptedDyno(
                message["id"], message["pid"], dict(zip(kinds, fds, strict=False)), message.get("status"),
                message.get("error", ""), message.get("started", False), message.get("spawned_at", 0.0)))
        elif op == "hello_done":
            self._hello_done.set()
        elif op in ("spawned", "preforked", "cleared", "error"):
            waiter = self._waiting.pop(message.get("id") or "", None)
            if waiter is not None:
                waiter.send_nowait((message, fds))
            else:
                for fd in fds:
                    os.close(fd)

    async def _receive(self) -> tuple[dict[str, Any] | None, list[int]]:
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

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            try:
                await self._sock.send(json.dumps(message).encode())
            except OSError as exc:
                raise SpawnerError(f"the spawner went away: {exc}") from None

    async def hello(self) -> list[AdoptedDyno]:
        """Every dyno the spawner still knows, with fresh copies of its fds (re-adoption)."""
        self._adopted = []
        self._hello_done = trio.Event()
        await self._send({"op": "hello"})
        await self._hello_done.wait()
        return self._adopted

    async def spawn(self, spec: dict[str, Any]) -> SpawnedDyno:
        message, fds = await self._request(spec["id"], {"op": "spawn", "spec": spec})
        return SpawnedDyno(spec["id"], message["pid"], dict(zip(message["kinds"], fds, strict=False)))

    async def exec(self, spec: dict[str, Any]) -> SpawnedDyno:
        """A process entering a running dyno (dynod.linux.dyno_exec.ExecSpec); reported as a dyno is."""
        message, fds = await self._request(spec["id"], {"op": "exec", "spec": spec})
        return SpawnedDyno(spec["id"], message["pid"], dict(zip(message["kinds"], fds, strict=False)))

    async def clear_keyrings(self, uid: int, gid: int) -> None:
        """Empty the kernel keyrings of ``uid`` (a destroyed app's): dynod.linux.keyring."""
        await self._request(f"keyrings.{uid}", {"op": "clear_keyrings", "id": f"keyrings.{uid}", "uid": uid,
                                                "gid": gid})

    async def prefork(self, pool_id: str) -> int:
        """Fork a warm dyno now (it waits for ``assign``); returns its pid."""
        message, _ = await self._request(pool_id, {"op": "prefork", "id": pool_id})
        return int(message["pid"])

    async def assign(self, pool_id: str, spec: dict[str, Any]) -> SpawnedDyno:
        """Hand a warm dyno its spec: it becomes dyno ``spec["id"]``; then ``go`` as for a spawn."""
        message, fds = await self._request(spec["id"], {"op": "assign", "id": pool_id, "spec": spec})
        return SpawnedDyno(spec["id"], message["pid"], dict(zip(message["kinds"], fds, strict=False)))

    async def _request(self, key: str, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        send, recv = trio.open_memory_channel[tuple[dict[str, Any], list[int]]](1)
        self._waiting[key] = send
        await self._send(request)
        message, fds = await recv.receive()
        if message["op"] == "error":
            raise SpawnerError(message.get("message", f"{request['op']} failed"))
        return message, fds

    async def go(self, dyno_id: str) -> None:
        await self._send({"op": "go", "id": dyno_id})

    async def abort(self, dyno_id: str) -> None:
        await self._send({"op": "abort", "id": dyno_id})

    async def kill(self, dyno_id: str, sig: int) -> None:
        await self._send({"op": "kill", "id": dyno_id, "signal": int(sig)})

    async def forget(self, dyno_id: str) -> None:
        await self._send({"op": "forget", "id": dyno_id})

    async def shutdown(self, force: bool = False) -> None:
        await self._send({"op": "shutdown", "force": force})

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
