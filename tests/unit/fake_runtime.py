"""In-memory stand-ins for what the dyno manager drives: the spawner, cgroups, the network and
processes (the Protocols of dynod/manager/runtime.py), sharing one model of processes.

A dyno here is two fake processes, its init (the pid the spawner reports) and the app beneath it,
both in the dyno's fake cgroup once dynod has moved them. The app obeys signals the way a real
one does: SIGTERM ends it unless it was told to ignore it; SIGKILL always ends it; when it ends,
its init ends with the same status and the spawner reports the exit. Tests act as the world:
``crash`` an app, run it over its memory quota, have the kernel OOM-kill it. Everything the
manager asked for is recorded in order, for the tests to check.

The stdout/stderr fds handed to the manager are real pipes (the manager sets them non-blocking
and pumps them), as are the memory watch's fds (it waits on them with trio).
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing

from dynod.linux.cgroups import CgroupBackend, CgroupLimits, DynoCgroup, MemoryStats, MemoryWatch
from dynod.linux.cgroups.primer import MovePrimer
from dynod.linux.dyno_exec import ExecSpec
from dynod.linux.dyno_init import DynoSpec, PreparedNet
from dynod.linux.net import AddressPool
from dynod.linux.spawn_messages import Exited, Started
from dynod.linux.spawner_client import AdoptedDyno, SpawnedDyno, SpawnerError, SpawnerEvent

SIGTERM_STATUS = 128 + signal.SIGTERM
SIGKILL_STATUS = 128 + signal.SIGKILL


@dataclass(eq=False)
class FakeProcess:
    pid: int
    dyno: str  # the id of the dyno (or warm dyno) it belongs to
    init: bool
    group: FakeCgroup | None = None
    ignores_sigterm: bool = False
    exited: trio.Event = field(default_factory=trio.Event)


class FakeKernel:
    """The processes, shared by every fake below."""

    def __init__(self) -> None:
        self.next_pid = 1000
        self.procs: dict[int, FakeProcess] = {}
        self.signals: list[tuple[str, int, int]] = []  # (dyno id, pid, signal), as sent
        self.on_dyno_exit: Callable[[str, int], None] = lambda dyno, status: None

    def fork(self, dyno: str, *, init: bool, group: FakeCgroup | None = None) -> FakeProcess:
        self.next_pid += 1
        proc = self.procs[self.next_pid] = FakeProcess(self.next_pid, dyno, init, group)
        return proc

    def of(self, dyno: str) -> list[FakeProcess]:
        return [p for p in self.procs.values() if p.dyno == dyno]

    def app(self, dyno: str) -> FakeProcess | None:
        return next((p for p in self.of(dyno) if not p.init), None)

    def signal(self, pid: int, sig: int) -> bool:
        proc = self.procs.get(pid)
        if proc is None:
            return False
        self.signals.append((proc.dyno, pid, sig))
        if sig == signal.SIGKILL:
            self.end_dyno(proc.dyno, SIGKILL_STATUS)
        elif sig == signal.SIGTERM and not proc.ignores_sigterm:
            # tini: the app's exit is the dyno's; an init signalled with no app left goes too
            self.end_dyno(proc.dyno, SIGTERM_STATUS)
        return True

    def end_dyno(self, dyno: str, status: int) -> None:
        """Every process of the dyno is gone (its init died: its PID namespace with it)."""
        procs = self.of(dyno)
        if not procs:
            return
        for proc in procs:
            del self.procs[proc.pid]
            proc.exited.set()
        self.on_dyno_exit(dyno, status)


class FakeMemoryWatch(MemoryWatch):
    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)

    def poke(self) -> None:
        os.write(self._w, b"!")

    def fileno(self) -> int:
        return self._r

    def drain(self) -> None:
        try:
            while os.read(self._r, 64):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class FakeCgroup(DynoCgroup):
    def __init__(self, backend: FakeCgroups, name: str, limits: CgroupLimits) -> None:
        super().__init__(name, limits.memory_high)
        self.backend = backend
        self.limits = limits
        self.stats = MemoryStats(total=10 << 20, rss=10 << 20, cache=0, swap=0, pgpgin=1, pgpgout=1)
        self.ooms = 0
        self.watches: list[FakeMemoryWatch] = []
        self.removed = False

    def procs_files(self) -> list[str]:
        return [f"fake-cgroup:{id(self)}/cgroup.procs"]

    def birth_procs_files(self) -> list[str]:
        return self.procs_files() if self.backend.cgroup2 else []

    def time_own_join(self) -> float | None:
        self.backend.join_timings += 1
        return None if self.backend.cgroup2 else self.backend.own_join_ms

    def pids(self) -> list[int]:
        return sorted(p.pid for p in self.backend.kernel.procs.values() if p.group is self)

    def signal_all(self, sig: int) -> int:
        return sum(self.backend.kernel.signal(pid, sig) for pid in self.pids())

    def memory_stats(self) -> MemoryStats:
        return self.stats

    def oom_kills(self) -> int:
        return self.ooms

    def watch_memory(self) -> MemoryWatch:
        watch = FakeMemoryWatch()
        self.watches.append(watch)
        return watch

    def remove(self) -> None:
        if self.pids():
            raise OSError(errno.EBUSY, f"cgroup {self.name} still has processes")
        self.removed = True
        if self.backend.groups.get(self.name) is self:
            del self.backend.groups[self.name]

    # -- the world acting on the dyno ------------------------------------------------------------
    def use_memory(self, total: int) -> None:
        self.stats = MemoryStats(total=total, rss=total, cache=0, swap=0, pgpgin=1, pgpgout=1)
        self._poke()

    def oom_kill(self) -> None:
        """The kernel's OOM killer takes the app (at the hard limit): the dyno dies of SIGKILL."""
        self.ooms += 1
        app = next((p for p in self.backend.kernel.procs.values() if p.group is self and not p.init), None)
        self._poke()
        if app is not None:
            self.backend.kernel.end_dyno(app.dyno, SIGKILL_STATUS)

    def _poke(self) -> None:
        for watch in self.watches:
            try:
                watch.poke()
            except OSError:
                pass  # closed: nobody watches any more


class FakePrimer(MovePrimer):
    """A move primer with no thread: each prime records what had been made and moved by then."""

    def __init__(self, backend: FakeCgroups) -> None:  # no super(): no group, no thread
        self.backend = backend
        self.primes = 0
        self.closed = False
        self.at: list[tuple[str, int]] = []  # (the last group made, the moves done) at each prime

    def wait_joined(self, timeout: float | None = None) -> OSError | None:
        return None

    def prime(self) -> None:
        self.primes += 1
        self.at.append((self.backend.created[-1] if self.backend.created else "", len(self.backend.joined)))

    def close(self) -> None:
        self.closed = True


class FakeCgroups(CgroupBackend):
    kind = "fake"

    def __init__(self, kernel: FakeKernel, *, can_rename: bool = True, cgroup2: bool = False) -> None:
        self.kernel = kernel
        self.can_rename = can_rename
        self.cgroup2 = cgroup2  # its groups are cgroup2 ones: a dyno can be born in its group
        self.own_join_ms = 10.0  # what a timed join costs (a v1 host without favordynmods)
        self.join_timings = 0
        self.joined: list[str] = []  # the cgroup.procs files written after a fork, in order
        self.groups: dict[str, FakeCgroup] = {}
        self.created: list[str] = []
        self.primers: list[FakePrimer] = []  # made by move_primer (v1 groups only, as CgroupV1)
        self.on_primer_made: Callable[[], None] = lambda: None  # called in move_primer's thread

    def create(self, name: str, limits: CgroupLimits) -> FakeCgroup:
        if name in self.groups:
            raise OSError(errno.EEXIST, f"cgroup {name} exists")
        group = self.groups[name] = FakeCgroup(self, name, limits)
        self.created.append(name)
        return group

    def rename(self, group: DynoCgroup, name: str, limits: CgroupLimits) -> FakeCgroup:
        assert isinstance(group, FakeCgroup)
        del self.groups[group.name]
        group.name, group.limits, group.quota = name, limits, limits.memory_high
        self.groups[name] = group
        return group

    def open(self, name: str, quota: int) -> FakeCgroup | None:
        group = self.groups.get(name)
        if group is not None and quota:
            group.quota = quota
        return group

    def by_procs_file(self, path: str) -> FakeCgroup:
        return next(g for g in self.groups.values() if path in g.procs_files())

    def names(self) -> list[str]:
        return sorted(self.groups)

    def remove_subtree(self) -> None:
        pass

    def roots(self) -> list[str]:
        return []

    def bound_subtree_pids(self, total: int) -> None:
        pass

    def move_primer(self) -> FakePrimer | None:
        if self.cgroup2:
            return None
        self.primers.append(FakePrimer(self))
        self.on_primer_made()
        return self.primers[-1]


class FakeProcesses:
    """dynod/manager/runtime.py's Processes, on the fake kernel."""

    def __init__(self, kernel: FakeKernel, cgroups: FakeCgroups) -> None:
        self.kernel = kernel
        self.cgroups = cgroups

    def signal(self, pid: int, sig: int) -> bool:
        return self.kernel.signal(pid, sig)

    def signal_group(self, pgid: int, sig: int) -> bool:
        return self.kernel.signal(pgid, sig)

    def join_cgroup(self, procs_file: str, pid: int) -> None:
        proc = self.kernel.procs.get(pid)
        if proc is None:
            raise ProcessLookupError(errno.ESRCH, f"no process {pid}")
        group = self.cgroups.by_procs_file(procs_file)
        self.cgroups.joined.append(procs_file)
        for p in self.kernel.of(proc.dyno):  # the app is forked by the init later: it inherits
            p.group = group

    def follow(self, pid: int, members: Callable[[], Iterable[int]]) -> int | None:
        return pid if pid in self.kernel.procs and pid in members() else None

    async def wait_exit(self, handle: int) -> None:
        proc = self.kernel.procs.get(handle)
        if proc is not None:
            await proc.exited.wait()


@dataclass(eq=False)
class FakeChild:
    id: str
    init: FakeProcess
    spec: DynoSpec | None
    out: list[int]  # write ends of its stdout/stderr pipes, kept by the "spawner"
    status: int | None = None
    error: str = ""
    started: bool = False
    went: bool = False


class FakeSpawner:
    """dynod/manager/runtime.py's Spawner. ``fail_spawn``: refuse the next spawns with this message;
    ``fail_exec``: dynos whose command contains the key fail before they run, with the value;
    ``fail_assigned``: the same for warm dynos, as their spec arrives, and their exit is handled
    by the manager before the assign's answer reaches the start (the spawner's order, at worst)."""

    def __init__(self, kernel: FakeKernel, cgroups: FakeCgroups | None = None) -> None:
        self.kernel = kernel
        self.cgroups = cgroups  # where a spec's cgroup_procs are born in (clone3 CLONE_INTO_CGROUP)
        kernel.on_dyno_exit = self._exited
        self.children: dict[str, FakeChild] = {}
        self.requests: list[tuple[str, str]] = []  # (op, id)
        self.prepared_nets: dict[str, PreparedNet | None] = {}  # a warm dyno's, by pool id
        # A dyno whose exec is slow: its "started" waits for release_starts.
        self.hold_starts = False
        self.held_starts: list[Started] = []
        self.closed = trio.Event()
        self._send, self._recv = trio.open_memory_channel[SpawnerEvent](1000)
        self.fail_spawn: str = ""
        self.fail_exec: dict[str, str] = {}
        self.fail_assigned: dict[str, str] = {}
        # As the real one: a spec whose net names "bridge" gets its veth from the spawner (wired).
        self.makes_veths = False
        self.veths: list[tuple[str, int]] = []  # (address, pid) of the veths it made

    # -- the Protocol ----------------------------------------------------------------------------
    async def hello(self) -> list[AdoptedDyno]:
        self.requests.append(("hello", ""))
        adopted = []
        for child in self.children.values():
            fds = {}
            for kind in ("stdout", "stderr"):
                r, w = os.pipe()
                fds[kind] = r
                child.out.append(w)
            adopted.append(AdoptedDyno(child.id, child.init.pid, fds, child.status, child.error, child.started))
        return adopted

    async def spawn(self, spec: DynoSpec) -> SpawnedDyno:
        self.requests.append(("spawn", spec.id))
        await trio.lowlevel.checkpoint()
        if self.fail_spawn:
            raise SpawnerError(self.fail_spawn)
        if spec.id in self.children:
            raise SpawnerError(f"dyno {spec.id} exists")
        born_in = None
        if spec.cgroup_procs:
            assert self.cgroups is not None, "a spec to be born in a group, but the fake has no cgroups"
            born_in = self.cgroups.by_procs_file(spec.cgroup_procs[0])
        return self._spawned(spec.id, self.kernel.fork(spec.id, init=True, group=born_in), spec)

    async def exec(self, spec: ExecSpec) -> SpawnedDyno:
        raise SpawnerError("the fake spawner does not enter dynos")

    async def prefork(self, pool_id: str, mnt: str = "", tmpfs_mb: int = 0, net: PreparedNet | None = None) -> int:
        self.requests.append(("prefork", pool_id))
        await trio.lowlevel.checkpoint()
        child = self._spawned(pool_id, self.kernel.fork(pool_id, init=True), None)
        self.prepared_nets[pool_id] = net
        return child.pid

    async def wired(self, pool_id: str) -> None:
        self.requests.append(("wired", pool_id))

    async def assign(self, pool_id: str, spec: DynoSpec) -> SpawnedDyno:
        self.requests.append(("assign", pool_id))
        await trio.lowlevel.checkpoint()
        net = self.prepared_nets.get(pool_id)
        if net is not None and not net.matches(spec.net):  # as the real one: dynod then starts it cold
            raise SpawnerError(f"warm dyno {pool_id} was prepared for the network {net}, not {spec.net}")
        child = self.children.pop(pool_id, None)
        if child is None or child.status is not None:
            raise SpawnerError(f"no warm dyno {pool_id} to assign")
        for proc in self.kernel.of(pool_id):
            proc.dyno = spec.id
        for fd in child.out:
            os.close(fd)
        spawned = self._spawned(spec.id, child.init, spec)
        failure = next((why for key, why in self.fail_assigned.items() if key in " ".join(spec.argv)), None)
        if failure is not None:
            self.children[spec.id].error = failure
            self.kernel.end_dyno(spec.id, 1)
            await trio.testing.wait_all_tasks_blocked()  # the exit event is handled first
        return spawned

    async def go(self, dyno_id: str) -> None:
        self.requests.append(("go", dyno_id))
        child = self.children.get(dyno_id)
        if child is None or child.went or child.status is not None:
            return
        child.went = True
        command = " ".join(child.spec.argv) if child.spec is not None else ""
        failure = next((why for key, why in self.fail_exec.items() if key in command), None)
        if failure is not None:
            child.error = failure
            self.kernel.end_dyno(dyno_id, 1)
            return
        child.started = True
        self.kernel.fork(dyno_id, init=False, group=child.init.group)
        if self.hold_starts:
            self.held_starts.append(Started(dyno_id, child.init.pid))
        else:
            self._send.send_nowait(Started(dyno_id, child.init.pid))

    def release_starts(self) -> None:
        """Say "started" for the dynos whose exec was held (``hold_starts``), and hold no more."""
        self.hold_starts = False
        for event in self.held_starts:
            self._send.send_nowait(event)
        self.held_starts.clear()

    async def abort(self, dyno_id: str) -> None:
        self.requests.append(("abort", dyno_id))
        child = self.children.get(dyno_id)
        if child is not None and not child.went:
            child.went = True
            self.kernel.end_dyno(dyno_id, 1)

    async def kill(self, dyno_id: str, sig: int) -> None:
        self.requests.append(("kill", dyno_id))
        child = self.children.get(dyno_id)
        if child is not None and child.status is None:
            self.kernel.signal(child.init.pid, sig)

    async def forget(self, dyno_id: str) -> None:
        self.requests.append(("forget", dyno_id))
        child = self.children.pop(dyno_id, None)
        if child is not None:
            for fd in child.out:
                os.close(fd)

    async def clear_keyrings(self, uid: int, gid: int) -> None:
        self.requests.append(("clear_keyrings", str(uid)))

    def events(self) -> AsyncIterator[SpawnerEvent]:
        return self._recv

    # -- inside ----------------------------------------------------------------------------------
    def _spawned(self, dyno_id: str, init: FakeProcess, spec: DynoSpec | None) -> SpawnedDyno:
        fds: dict[str, int] = {}
        out: list[int] = []
        for kind in ("stdout", "stderr"):
            r, w = os.pipe()
            fds[kind] = r
            out.append(w)
        self.children[dyno_id] = FakeChild(dyno_id, init, spec, out)
        net = (spec.net or {}) if spec is not None else {}
        wired = self.makes_veths and bool(net.get("bridge"))
        if wired:
            self.veths.append((net["address"], init.pid))
        return SpawnedDyno(dyno_id, init.pid, fds, wired=wired)

    def _exited(self, dyno_id: str, status: int) -> None:
        child = self.children.get(dyno_id)
        if child is None:
            return
        child.status = status
        self._send.send_nowait(Exited(dyno_id, child.init.pid, status, child.error))

    # -- the world acting on dynos ---------------------------------------------------------------
    def crash(self, dyno_id: str, status: int = 1) -> None:
        """The app exits on its own (any exit of a dyno's process is a crash on Heroku)."""
        self.kernel.end_dyno(dyno_id, status)

    def running(self) -> list[str]:
        return sorted(c.id for c in self.children.values() if c.status is None)


class FakeNetwork:
    def __init__(self, subnet: str = "198.18.250.0/24") -> None:
        self.pool = AddressPool(subnet)
        self.attached: list[tuple[str, int]] = []
        self.pruned: list[list[str]] = []

    async def ensure_bridge(self) -> None:
        pass

    async def attach(self, address: str, pid: int) -> str:
        await trio.lowlevel.checkpoint()
        self.attached.append((address, pid))
        return f"veth-{pid}"

    async def prune(self, keep_addresses: Iterable[str]) -> list[str]:
        self.pruned.append(sorted(keep_addresses))
        return []


@dataclass(frozen=True)
class LogLine:
    at: float
    app: str
    source: str
    dyno: str
    message: str


class FakeLogs:
    """The log stream: every platform line, split as LogStream.emit splits them."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lines: list[LogLine] = []

    def emit(self, app: str, source: str, dyno: str, message: str, *, at: float | None = None) -> None:
        for line in message.split("\n"):
            self.lines.append(LogLine(self.clock() if at is None else at, app, source, dyno, line))

    async def pump(self, app: str, dyno: str, fd: int) -> None:
        os.close(fd)  # the app's own output is not what these tests look at

    def of(self, dyno: str) -> list[str]:
        return [line.message for line in self.lines if line.dyno == dyno]


class FakeSlugs:
    def __init__(self, path: str) -> None:
        self.path = path
        self.broken = ""  # an error message: unpacking fails (a start failure, not a crash)

    def unpacked(self, slug_id: str, uid: int, gid: int) -> Path:
        if self.broken:
            raise OSError(errno.EIO, self.broken)
        return Path(self.path)


class FakeStacks:
    def __init__(self, path: str) -> None:
        self.path = path

    def ensure(self, name: str, progress: Callable[[str], None]) -> Path:
        return Path(self.path)
