"""``dynoctl ps:exec``: a command run inside a dyno that is already running, attached as ``run`` is.

The spawner makes the process (dynod.linux.dyno_exec: the dyno's namespaces, cgroups, uid,
seccomp, no capabilities); this module asks for it, waits until it has exec'd (so a dyno that
stopped meanwhile, or one at its pids limit, is one line before the client's terminal goes raw),
and carries its terminal or pipes to the API's attach protocol. Unlike a one-off dyno, its output
is not copied to the app's log stream (Heroku's ps:exec is a private SSH session), and leaving
ends the session's process, never the dyno.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal

import trio

from ..errors import NotFound, UserError
from ..linux.dyno_exec import ExecSpec
from ..linux.spawn_messages import Exited
from ..linux.spawner_client import SpawnerError, SpawnerEvent
from ..linux.syscalls import set_window_size
from .attach import read_chunks
from .dynos import PROFILE, DynoManager, LiveDyno

DEFAULT_COMMAND = "bash"


class ExecSession:
    """One process inside a running dyno, wired to an attached client (api.service.AttachedDyno)."""

    def __init__(self, manager: DynoManager, dyno: LiveDyno, exec_id: str, pid: int, fds: dict[str, int],
                 events: trio.MemoryReceiveChannel[SpawnerEvent]) -> None:
        self.name = f"{dyno.name} (exec)"
        self.id = exec_id
        self.pid = pid
        self._manager = manager
        self._events = events
        self._fds = fds
        self._tty = "pty" in fds
        self._stdin = fds.get("pty", fds.get("stdin"))
        self._status: int | None = None
        self._exited = trio.Event()
        self._output_send, self._output_recv = trio.open_memory_channel[tuple[str, bytes]](64)
        readers = [("stdout", fds["pty"])] if self._tty else [("stdout", fds["stdout"]), ("stderr", fds["stderr"])]
        self._readers_left = len(readers)
        for _, fd in readers:
            os.set_blocking(fd, False)
        if self._stdin is not None:
            os.set_blocking(self._stdin, False)
        for stream, fd in readers:
            manager.nursery.start_soon(self._read, stream, fd)
        manager.nursery.start_soon(self._follow)

    async def _follow(self) -> None:
        async for event in self._events:
            if isinstance(event, Exited):
                self._status = event.status if event.status is not None else 255
                break
        self._manager.exec_events.pop(self.id, None)
        self._close_stdin_fd()
        self._exited.set()
        try:
            await self._manager.spawner.forget(self.id)
        except SpawnerError:
            pass

    async def _read(self, stream: str, fd: int) -> None:
        try:
            async for data in read_chunks(fd):
                try:
                    await self._output_send.send((stream, data))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the client is gone: drain until the process ends
        finally:
            if self._fds.get("pty") == fd:
                self._stdin = None
            for kind, owned in list(self._fds.items()):
                if owned == fd:
                    del self._fds[kind]
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
            self._readers_left -= 1
            if self._readers_left == 0:
                await self._output_send.aclose()

    def _close_stdin_fd(self) -> None:
        fd = self._fds.pop("stdin", None)
        if fd is not None:
            self._stdin = None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    async def send_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._stdin is not None:
            try:
                view = view[os.write(self._stdin, view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._stdin)
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EIO, errno.EBADF):
                    return  # it stopped reading: its exit follows
                raise

    async def close_stdin(self) -> None:
        if self._tty:
            await self.send_stdin(b"\x04")  # a terminal's EOF: ^D at the start of a line
        else:
            self._close_stdin_fd()

    async def resize(self, rows: int, cols: int) -> None:
        fd = self._fds.get("pty")
        if fd is not None:
            set_window_size(fd, rows, cols)

    async def receive(self) -> tuple[str, bytes] | None:
        try:
            return await self._output_recv.receive()
        except trio.EndOfChannel:
            return None

    async def wait(self) -> int:
        await self._exited.wait()
        return self._status if self._status is not None else 255

    async def kill(self) -> None:
        """The client left: end the session's process (and its process group), not the dyno."""
        self._output_recv.close()
        if not self._exited.is_set():
            try:
                await self._manager.spawner.kill(self.id, signal.SIGKILL)
            except SpawnerError:
                pass
            # its own session and group (setsid): its whole pipeline
            self._manager.processes.signal_group(self.pid, signal.SIGKILL)


async def start_exec(manager: DynoManager, app: str, dyno_name: str, command: str, *, tty: bool, rows: int,
                     cols: int, term: str | None = None) -> ExecSession:
    """Run ``command`` (bash by default) inside the running dyno ``dyno_name`` of ``app``."""
    live = manager.find(app, dyno_name)
    if live is None or live.exited.is_set() or live.cgroup is None:
        raise NotFound(f"No running dyno {dyno_name} in {app}: ps:exec enters a dyno that is up; "
                       f"see `dynoctl ps -a {app}`.")
    command = command.strip() or DEFAULT_COMMAND
    exec_id = f"{live.id}.exec.{secrets.token_hex(3)}"
    spec = ExecSpec(id=exec_id, dyno=live.id, argv=["/bin/bash", "-c", PROFILE + command],
                    cgroup_procs=live.cgroup.procs_files(), stdio="tty" if tty else "pipes",
                    rows=rows, cols=cols, env={"TERM": term} if tty and term else {})
    send, events = trio.open_memory_channel[SpawnerEvent](4)
    manager.exec_events[exec_id] = send
    try:
        try:
            spawned = await manager._ask(lambda spawner: spawner.exec(spec))
        except (SpawnerError, BaseExceptionGroup) as exc:
            refused = _spawner_error(exc)
            if refused is None:
                raise
            raise UserError(f"Cannot exec into {dyno_name}: {_one_line(str(refused))}.", status=409,
                            code="dyno_not_running") from None
        first = await events.receive()
    except BaseException:
        manager.exec_events.pop(exec_id, None)
        raise
    if isinstance(first, Exited):
        manager.exec_events.pop(exec_id, None)
        for fd in spawned.fds.values():
            os.close(fd)
        try:
            await manager.spawner.forget(exec_id)
        except SpawnerError:
            pass
        why = _one_line(first.error) or f"it exited with status {first.status}"
        raise UserError(f"Cannot exec into {dyno_name}: {why}.", status=409, code="exec_failed")
    return ExecSession(manager, live, exec_id, spawned.pid, spawned.fds, events)


def _spawner_error(exc: BaseException) -> SpawnerError | None:
    """The spawner's refusal, also when it comes wrapped in the exception group of a trio nursery."""
    if isinstance(exc, SpawnerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(SpawnerError)
        if matched is not None and rest is None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf if isinstance(leaf, SpawnerError) else None
    return None


def _one_line(error: str) -> str:
    """The spawner's error, without the exception's class name or a trailing period."""
    line = error.strip().splitlines()[0] if error.strip() else ""
    name, sep, rest = line.partition(": ")
    if sep and name.isidentifier() and name[:1].isupper():
        line = rest
    return line.split(" | ")[0].rstrip(".")
