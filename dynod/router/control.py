"""dynod's side of the router: find or start the router process and talk to it over its unix socket.

The router runs in its own session, so it survives dynod: on restart dynod calls
``connect_or_start`` again, finds the router still answering, re-attaches (the router sends the log
lines it buffered meanwhile) and pushes a fresh snapshot of routes.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import trio

from ..errors import UserError
from ..linux import process as processes
from .routes import AppRoute
from .snapshots import CertsSnapshot, RoutesSnapshot
from .tls import check_cert_pair
from .wire import MessageReader, encode

_START_TIMEOUT = 30.0


async def _connect(path: Path) -> trio.SocketStream | None:
    try:
        return await trio.open_unix_socket(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        return None


class RouterControl:
    """An attached connection to the router: push routes and certs, receive its log lines."""

    def __init__(self, stream: trio.SocketStream, pid: int, control_path: Path,
                 process: subprocess.Popen[bytes] | None) -> None:
        self._stream = stream
        self._messages = MessageReader(self._receive)
        self._stash: list[dict[str, Any]] = []  # log lines read while waiting for a reply; yielded first
        self._send_lock = trio.Lock()
        self.pid = pid  # the router parent's pid
        self.control_path = control_path
        self._process = process  # set when this RouterControl started the router
        # Called with an app's name when the router holds a request for it while it sleeps.
        self.on_wake: Callable[[str], None] = lambda app: None

    @classmethod
    async def connect_or_start(cls, *, control_path: Path | str, argv: list[str]) -> RouterControl:
        """Attach to the router answering on ``control_path``, starting ``argv`` detached if none does."""
        path = Path(control_path)
        stream = await _connect(path)
        process = None
        if stream is None:
            stream, process = await cls._start(path, argv)
        try:
            await stream.send_all(encode({"type": "attach"}))
            control = cls(stream, 0, path, process)
            hello = await control._next_message(want="hello")
            control.pid = int(hello["pid"])
            return control
        except BaseException:
            await stream.aclose()
            raise

    @staticmethod
    async def _start(path: Path, argv: list[str]) -> tuple[trio.SocketStream, subprocess.Popen[bytes]]:
        # Early errors (a port in use) go to this file until the router has its own log.
        with tempfile.TemporaryFile() as early_errors:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=early_errors,
                                       stderr=early_errors, start_new_session=True, close_fds=True)
            with trio.move_on_after(_START_TIMEOUT):
                while True:
                    stream = await _connect(path)
                    if stream is not None:
                        return stream, process
                    if process.poll() is not None:
                        early_errors.seek(0)
                        lines = early_errors.read().decode(errors="replace").strip().splitlines()
                        reason = lines[-1] if lines else f"exit status {process.returncode}"
                        raise UserError(f"The router did not start: {reason}")
                    await trio.sleep(0.05)
            process.kill()
            process.wait()
            raise UserError(f"The router did not answer on {path} within {_START_TIMEOUT:g} s; "
                            "see router.log in its state dir.")

    async def _send_line(self, line: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(line)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise UserError("The router connection is gone; reconnect with connect_or_start.") from None

    async def _receive(self) -> bytes:
        return await self._stream.receive_some(65536)

    async def _next_message(self, want: str | None = None) -> dict[str, Any]:
        """The next message (of type ``want``, stashing log lines read on the way for receive_logs)."""
        while True:
            message = await self._messages.next()
            if message is None:
                raise EOFError("router connection closed")
            if want is None or message["type"] == want:
                return message
            if message["type"] in ("log", "wake"):
                self._stash.append(message)

    async def push_routes(self, apps: RoutesSnapshot | Iterable[AppRoute]) -> None:
        """Replace the router's routes with this full snapshot of apps (see docs/router.md): a
        snapshot or its AppRoutes. The router checks it again on arrival and keeps what it had if
        it refuses it."""
        snapshot = apps if isinstance(apps, RoutesSnapshot) else RoutesSnapshot(tuple(apps))
        for app in snapshot.apps:
            if not isinstance(app, AppRoute):  # the old {"myapp": {...}} form iterates as names
                raise TypeError(f"push_routes takes AppRoutes, not {type(app).__name__} ({app!r})")
        await self._send_line(snapshot.encode())

    async def push_certs(self, certs: CertsSnapshot | list[dict[str, str]]) -> None:
        """Replace the per-domain certificates: [{"domain", "cert_pem", "key_pem"}], each pair checked."""
        if not isinstance(certs, CertsSnapshot):
            if not isinstance(certs, list):
                raise UserError("certs must be a list of {domain, cert_pem, key_pem}.")
            certs = CertsSnapshot.decode({"type": "certs", "certs": certs})
        for entry in certs.certs:
            check_cert_pair(entry.domain, entry.cert_pem, entry.key_pem)
        await self._send_line(certs.encode())

    async def receive_logs(self) -> AsyncIterator[tuple[str, str]]:
        """(app, line) for each router log line, until the router goes away."""
        while True:
            while self._stash:
                message = self._stash.pop(0)
                if message["type"] == "wake":
                    self.on_wake(message["app"])
                else:
                    yield message["app"], message["line"]
            try:
                message = await self._next_message()
            except EOFError:
                return
            if message["type"] == "wake":
                self.on_wake(str(message["app"]))
            elif message["type"] == "log":
                yield message["app"], message["line"]
            elif message["type"] == "error":
                # A refusal of something pushed earlier; the router kept its previous state.
                yield "", f"router refused a control message: {message.get('message')}"

    async def statistics(self) -> dict[str, Any]:
        """The router's counters (workers, requests, codes, log buffer), over a separate connection."""
        return await _query(self.control_path, {"type": "stats"}, "stats")

    async def stop_router(self, timeout: float = 30.0) -> None:
        """Stop the router and its workers; returns once the router process has exited."""
        try:
            await _query(self.control_path, {"type": "stop"}, "stopping")
        except (UserError, EOFError):
            pass  # already gone
        with trio.move_on_after(timeout):
            while _alive(self.pid, self._process):
                await trio.sleep(0.02)
        await self.aclose()

    async def aclose(self) -> None:
        """Detach; the router keeps serving (and buffers log lines until dynod attaches again)."""
        await self._stream.aclose()
        if self._process is not None:
            self._process.poll()  # reap it if it has exited, so no zombie stays behind


def _alive(pid: int, process: subprocess.Popen[bytes] | None) -> bool:
    if process is not None:
        return process.poll() is None
    processes.reap_if_exited(pid)  # if it is our child (an earlier RouterControl started it)
    return processes.exists(pid)


async def _query(path: Path, message: dict[str, Any], want: str) -> dict[str, Any]:
    stream = await _connect(path)
    if stream is None:
        raise UserError(f"No router answers on {path}.")
    async with stream:
        await stream.send_all(encode(message))
        replies = MessageReader(lambda: stream.receive_some(65536))
        while (reply := await replies.next()) is not None:
            if reply["type"] == want:
                return reply
            if reply["type"] == "error":
                raise UserError(str(reply.get("message")))
        raise EOFError("router connection closed")
