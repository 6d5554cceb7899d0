"""An attached one-off dyno (``dynoctl run``): its terminal or pipes, wired to the API client.

With a TTY the dyno's stdio is one pty whose master dynod holds: input is written to it, window
sizes are set on it, and output is read from it. Without one, stdin, stdout and stderr are three
pipes. Output is also copied, line by line, to the app's log stream as ``app[run.N]``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from typing import Any

import trio

from ..linux.syscalls import set_window_size
from .dynos import DynoManager, LiveDyno

CHUNK = 65536


async def read_chunks(fd: int) -> AsyncIterator[bytes]:
    """What a non-blocking pipe or pty master gives until its other side is closed (a pty master
    reads EIO then, a pipe reads b"")."""
    while True:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:
                return
            raise
        if not data:
            return
        yield data


class AttachedSession:
    def __init__(self, live: LiveDyno, manager: DynoManager, logs: Any) -> None:
        self.live = live
        self.name = live.name
        self._manager = manager
        self._logs = logs
        self._tty = "pty" in live.fds
        self._output_send, self._output_recv = trio.open_memory_channel[tuple[str, bytes]](64)
        self._readers_left = 0
        fds = live.fds
        self._stdin = fds.get("pty", fds.get("stdin"))
        readers = [("stdout", fds["pty"])] if self._tty else [("stdout", fds["stdout"]), ("stderr", fds["stderr"])]
        for _, fd in readers:
            os.set_blocking(fd, False)
        if self._stdin is not None:
            os.set_blocking(self._stdin, False)
        self._readers_left = len(readers)
        for stream, fd in readers:
            manager.nursery.start_soon(self._read, stream, fd)

    async def _read(self, stream: str, fd: int) -> None:
        partial = b""
        try:
            async for data in read_chunks(fd):
                partial = self._log_lines(partial + data)
                try:
                    await self._output_send.send((stream, data))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the client is gone: keep draining into the log until the dyno ends
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if partial:
                self._logs.emit(self.live.app, "app", self.name, partial.decode(errors="replace"))
            # The session owns an attached dyno's fds: the manager leaves them for the last read.
            if self.live.fds.get("pty") == fd:
                self._stdin = None
            for kind, owned in list(self.live.fds.items()):
                if owned == fd:
                    del self.live.fds[kind]
            trio.lowlevel.notify_closing(fd)  # a send_stdin parked on this pty fd must wake, not hang
            os.close(fd)
            self._readers_left -= 1
            if self._readers_left == 0:
                await self._output_send.aclose()

    def _log_lines(self, data: bytes) -> bytes:
        *lines, rest = data.split(b"\n")
        for line in lines:
            self._logs.emit(self.live.app, "app", self.name, line.rstrip(b"\r").decode(errors="replace"))
        return rest

    async def send_stdin(self, data: bytes) -> None:
        if self._stdin is None:
            return
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._stdin, view)
                view = view[written:]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._stdin)
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EIO):
                    return  # the dyno stopped reading: its exit will follow
                raise

    async def close_stdin(self) -> None:
        if self._tty:
            await self.send_stdin(b"\x04")  # a terminal's EOF is ^D at the start of a line
        elif self._stdin is not None:
            fd = self.live.fds.pop("stdin", None)
            self._stdin = None
            if fd is not None:
                os.close(fd)

    async def resize(self, rows: int, cols: int) -> None:
        if self._tty:
            set_window_size(self.live.fds["pty"], rows, cols)

    async def receive(self) -> tuple[str, bytes] | None:
        try:
            return await self._output_recv.receive()
        except trio.EndOfChannel:
            return None

    async def wait(self) -> int:
        await self.live.exited.wait()
        fd = self.live.fds.pop("stdin", None)
        if fd is not None:
            self._stdin = None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
        return self.live.exit_status if self.live.exit_status is not None else 255

    def close(self) -> None:
        """Nobody reads the output any more: the readers stop waiting for a reader and drain."""
        self._output_recv.close()

    async def kill(self) -> None:
        """The client went away: stop the dyno (Heroku ends a one-off whose client is gone).

        The stop runs in the manager's nursery, not the request's: it takes up to the stop timeout
        (an interactive bash ignores SIGTERM), longer than a request may wait.
        """
        self.close()
        if not self.live.exited.is_set():
            self._manager.nursery.start_soon(self._manager.stop, self.live, "client gone")
