"""The add-on servers as platform services: started, adopted, watched and restarted by dynod.

Each built-in add-on is one server process (a PostgreSQL cluster, a redis-server) with its own
data directory under the state dir and its own cgroup, whose memory limit is the plan's: a noisy
add-on meets its own limit, never another's or dynod's. The cgroups live in a subtree of their
own (``<cgroups.name>-addons``), apart from the dynos' (the dyno manager removes any group it does
not know in its own subtree).

A server runs in its own session: ``kill -9`` of dynod leaves it serving, and the next dynod
adopts it (the pid in the server's own pid file, checked against its command line, then a pidfd
to wait on). A server that dies is started again, at once and then after a growing pause, and
says so in the owning app's log stream. Nothing is lost by that: PostgreSQL commits are fsynced
(``fsync=on``, ``synchronous_commit=on``) and Redis keeps an append-only file.

Starting needs no fork in dynod's threads: the server's command is wrapped in ``sh``, which first
writes its own pid into the cgroup's ``cgroup.procs`` files (as root) and then ``exec``s
``setpriv`` to drop to the server's unprivileged system user (PostgreSQL refuses root).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..linux import pidfd as pidfds
from ..linux.cgroups import CgroupBackend, CgroupLimits, DynoCgroup

log = logging.getLogger("dynod.addons")
MiB = 1024 * 1024
READY_TIMEOUT = 60.0
RESTART_PAUSES = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # after the 1st, 2nd, ... crash in a row
STABLE_AFTER = 60.0  # a server up this long has its crash count reset
# $0: the cgroup.procs files, ':'-separated (none for a one-shot command). The same pid goes
# through every exec (unshare without --fork), so the pid dynod spawned is the server's own.
_WRAPPER = ('IFS=:; for p in $0; do echo $$ > "$p" || exit 111; done; unset IFS; '
            'exec unshare --mount --propagation private /bin/sh -c "$_INNER" sh "$@"')
# In the server's own mount namespace: its home, which lies under the root-only (0700) state
# dir, bound where its unprivileged user can reach it, /mnt/<add-on>; nothing of it shows on
# the host, and it goes with the server's last process.
# An add-on with a storage volume (``storage.img``: a file system of the plan's size) has it
# mounted at /mnt/<add-on>/volume, in the same namespace: the plan's storage is a real limit, and
# the loop device goes (autoclear) with the namespace. Files the last server left that would stop
# the next one ($DYNOD_SERVER_STALE, on that volume) go once it is mounted.
_INNER = ('mount -t tmpfs -o size=64k,mode=0755 dynod-addon /mnt && mkdir "/mnt/$DYNOD_SERVER_NAME" '
          '&& mount --bind "$DYNOD_SERVER_HOME" "/mnt/$DYNOD_SERVER_NAME" '
          '&& { [ ! -f "/mnt/$DYNOD_SERVER_NAME/storage.img" ] || mount -o loop,nosuid,nodev,noexec '
          '"/mnt/$DYNOD_SERVER_NAME/storage.img" "/mnt/$DYNOD_SERVER_NAME/volume"; } '
          '&& rm -f -- $DYNOD_SERVER_STALE '
          '&& exec setpriv --reuid="$DYNOD_SERVER_USER" --regid="$DYNOD_SERVER_USER" --init-groups -- "$@"')


def inner(key: str, *parts: str) -> str:
    """A path inside an add-on's home as its server sees it (see _INNER)."""
    return "/".join((f"/mnt/{key}", *parts))


def wrapper_env(key: str, home: Path, user: str) -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DYNOD_SERVER_USER": user,
            "DYNOD_SERVER_NAME": key, "DYNOD_SERVER_HOME": str(home), "_INNER": _INNER, "DYNOD_SERVER_STALE": ""}


async def run_as(key: str, home: Path, user: str, argv: list[str], *, timeout: float = 120) -> str:
    """Run a one-shot command as the add-on's server user, with its home at /mnt/<key>; its
    output, or an OSError with the output's tail."""
    with trio.fail_after(timeout):
        result = await trio.run_process(["/bin/sh", "-c", _WRAPPER, "", *argv], env=wrapper_env(key, home, user),
                                        capture_stdout=True, stderr=subprocess.STDOUT, check=False,
                                        stdin=subprocess.DEVNULL)
    output = result.stdout.decode(errors="replace")
    if result.returncode != 0:
        raise OSError(f"{argv[0].rsplit('/', 1)[-1]} exited {result.returncode}: {output.strip()[-600:]}")
    return output


@dataclass(frozen=True)
class ServerSpec:
    key: str  # the add-on's name: also its cgroup's name
    app: str  # the owning app: crashes are told in its log stream
    home: Path  # the add-on's directory; the server sees it at /mnt/<key> (``inner``)
    argv: tuple[str, ...]
    user: str  # the unprivileged system user the server runs as
    pidfile: Path  # written by the server itself (a host path)
    memory_mb: int
    log_file: Path
    ready: Callable[[], Awaitable[None]]  # returns once the server answers; raises if it cannot
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] = field(default_factory=dict)
    # Paths (as the server sees them) a server that died may leave and the next start removes:
    # PostgreSQL's postmaster.pid, whose dead (or unreaped) pid would read as a live postmaster.
    stale: tuple[str, ...] = ()


class _Server:
    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.pid: int | None = None
        self.proc: trio.Process | None = None
        self.cgroup: DynoCgroup | None = None
        self.stopping = False
        self.crashes = 0
        self.restarts = 0
        self.up = trio.Event()
        self.stopped = trio.Event()
        self.cancel = trio.CancelScope()


class ServerSupervisor:
    def __init__(self, cgroups: CgroupBackend, *, emit: Callable[[str, str], None]) -> None:
        self.cgroups = cgroups
        self._emit = emit  # (app, line): the owning app's log stream
        self._servers: dict[str, _Server] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def statistics(self) -> dict[str, Any]:
        return {key: {"pid": s.pid, "restarts": s.restarts, "up": s.up.is_set()} for key, s in self._servers.items()}

    def pid(self, key: str) -> int | None:
        server = self._servers.get(key)
        return server.pid if server else None

    async def ensure(self, spec: ServerSpec) -> None:
        """Adopt the running server or start it; return once it answers."""
        assert self._nursery is not None, "the supervisor is not running"
        server = self._servers.get(spec.key)
        if server is None or server.stopping:
            server = self._servers[spec.key] = _Server(spec)
            self._nursery.start_soon(self._supervise, server)
        with trio.fail_after(READY_TIMEOUT):
            await server.up.wait()

    async def stop(self, key: str, *, timeout: float = 30.0) -> None:
        """Stop the server (its data stays) and forget it; its cgroup is removed."""
        server = self._servers.pop(key, None)
        if server is None:
            return
        server.stopping = True
        server.cancel.cancel()
        with trio.CancelScope(shield=True):
            await server.stopped.wait()
            await self._terminate(server, timeout)
            await self._remove_cgroup(server)

    async def stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for key in list(self._servers):
                nursery.start_soon(self.stop, key)

    # -- one server ----------------------------------------------------------------------------
    async def _supervise(self, server: _Server) -> None:
        spec = server.spec
        try:
            with server.cancel:
                while not server.stopping:
                    started = time.monotonic()
                    try:
                        pidfd = await self._adopt_or_start(server)
                    except OSError as exc:
                        log.warning("add-on server %s did not start: %s", spec.key, exc)
                        self._emit(spec.app, f"Error: add-on {spec.key} did not start ({exc}); retrying")
                        pidfd = None
                    if pidfd is not None:
                        try:
                            try:
                                await self._wait_ready(server)
                                server.up.set()
                            except (OSError, trio.TooSlowError) as exc:
                                # Exited (the pidfd is readable at once), or still recovering:
                                # either way its exit is what is waited for.
                                log.warning("add-on server %s is not answering: %s", spec.key, exc)
                                self._emit(spec.app, f"Error: add-on {spec.key} is not answering ({exc})")
                            await trio.lowlevel.wait_readable(pidfd)
                        finally:
                            os.close(pidfd)
                        if server.proc is not None:
                            await server.proc.wait()
                    if server.stopping:
                        break
                    server.up = trio.Event()
                    if time.monotonic() - started > STABLE_AFTER:
                        server.crashes = 0
                    pause = RESTART_PAUSES[min(server.crashes, len(RESTART_PAUSES) - 1)]
                    server.crashes += 1
                    server.restarts += 1
                    self._emit(spec.app, f"Add-on {spec.key}: its server exited; restarting it"
                                         + (f" in {pause:.0f}s" if pause else ""))
                    log.warning("add-on server %s exited; restart %d", spec.key, server.restarts)
                    await trio.sleep(pause)
        finally:
            server.stopped.set()

    async def _adopt_or_start(self, server: _Server) -> int:
        spec = server.spec
        pid = _running_pid(spec.pidfile, inner(spec.key, ""))
        if pid is not None:
            try:
                pidfd = pidfds.watch(pid)
            except ProcessLookupError:
                pid = None
            else:
                server.pid, server.proc = pid, None
                server.cgroup = self.cgroups.open(spec.key, spec.memory_mb * MiB)
                return pidfd
        limits = CgroupLimits(memory_max=spec.memory_mb * MiB, memory_high=spec.memory_mb * MiB,
                              pids_max=4096, cpu_weight=100)
        cgroup = self.cgroups.open(spec.key, spec.memory_mb * MiB)
        if cgroup is not None:
            # Left from a server that died: whatever of it still runs (a PostgreSQL backend that
            # outlived its postmaster) would hold the data dir; the group is made again.
            cgroup.kill_all()
            await trio.to_thread.run_sync(cgroup.remove)
        # The pid file of a server that died names a dead (or zombie, if nobody reaped it) pid,
        # which PostgreSQL would take for a live postmaster. Every process of the old server was
        # just killed with its cgroup, so nothing can still use the data dir: the file goes.
        spec.pidfile.unlink(missing_ok=True)
        server.cgroup = cgroup = self.cgroups.create(spec.key, limits)
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_file, "ab") as out:
            env = {**wrapper_env(spec.key, spec.home, spec.user), **spec.env,
                   "DYNOD_SERVER_STALE": " ".join(spec.stale)}
            server.proc = await trio.lowlevel.open_process(
                ["/bin/sh", "-c", _WRAPPER, ":".join(cgroup.procs_files()), *spec.argv],
                stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, env=env, start_new_session=True, cwd="/")
        server.pid = server.proc.pid
        return pidfds.watch(server.proc.pid)

    async def _wait_ready(self, server: _Server) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                await server.spec.ready()
                return
            except Exception as exc:
                if server.proc is not None and server.proc.poll() is not None:
                    raise OSError(f"exited {server.proc.returncode}: {_tail(server.spec.log_file)}") from None
                if time.monotonic() > deadline:
                    raise trio.TooSlowError(f"{server.spec.key} did not answer: {exc}") from None
                await trio.sleep(0.05)

    async def _terminate(self, server: _Server, timeout: float) -> None:
        pid = server.pid
        if pid is None:
            return
        try:
            pidfd = pidfds.watch(pid)
        except ProcessLookupError:
            return
        try:
            pidfds.send_signal(pidfd, server.spec.stop_signal)
            with trio.move_on_after(timeout) as scope:
                await trio.lowlevel.wait_readable(pidfd)
            if scope.cancelled_caught:
                pidfds.send_signal(pidfd, signal.SIGKILL)
                await trio.lowlevel.wait_readable(pidfd)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)
        if server.proc is not None:
            await server.proc.wait()

    async def _remove_cgroup(self, server: _Server) -> None:
        cgroup = server.cgroup or self.cgroups.open(server.spec.key, 0)
        if cgroup is not None:
            cgroup.kill_all()
            try:
                await trio.to_thread.run_sync(cgroup.remove)
            except OSError as exc:
                log.warning("cgroup of add-on %s not removed: %s", server.spec.key, exc)


def _running_pid(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` if that process runs and its command line names ``marker``."""
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if marker.encode() in cmdline else None


def _tail(path: Path, size: int = 600) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode(errors="replace").strip().replace("\n", " | ")
    except OSError:
        return "(no log)"
