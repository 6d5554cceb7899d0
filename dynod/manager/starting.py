"""The start stage: a dyno made cold (a new cgroup, an address, a spawn, the cgroup moves and the
veth, then go) or warm (a forked dyno from the pool, its group renamed to the dyno's), and the
warm pool kept full (warm_pool.py decides how many to make). Build containers are made the same
way, unmanaged (``run_container``).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..errors import NotFound, UserError
from ..linux.cgroups import CgroupLimits, DynoCgroup
from ..linux.cgroups.birth import CHEAP_JOIN_MS
from ..linux.cgroups.primer import MovePrimer
from ..linux.dyno_init import DynoSpec, PreparedNet
from ..linux.idmap import app_identity
from ..linux.net import DYNO_IFNAME
from ..linux.seccomp import seccomp_profile
from ..linux.spawn_messages import Exited
from ..linux.spawner_client import SpawnerError
from ..model import DynoRecord, DynoState, MiB, Release, dyno_size
from . import recorded_cgroup, warm_pool
from .live import DEFAULT_PATH, INIT, PROFILE, SPAWNER_LOST, WARM_LIMITS, LiveDyno, WarmDyno, close_fd, log

if TYPE_CHECKING:
    from .dynos import DynoManager
    from .early_boot import EarlyBoot

# The longest a taken warm dyno's replacement waits for that dyno's exec (refill_after_exec).
REFILL_WAIT_S = 1.0


class Starting:
    def __init__(self, manager: DynoManager) -> None:
        self.m = manager
        # Whether a cold dyno writes its own v1 cgroup.procs files (first thing in the child, while
        # dynod wires its veth) rather than dynod moving it from threads after the fork: only where
        # that join was timed cheap when dynod started (probe_joins), never merely assumed.
        self.children_join = False
        # Where dynod moves them: the thread whose no-op move readies the cgroup write lock once a
        # cold dyno's groups are made, so the moves after the fork do not wait out its grace period.
        self.primer: MovePrimer | None = None

    def environment(self, release: Release, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "STACK": self.m.settings.stack}
        env.update(release.config)
        env.update(extra or {})
        env.update({"HOME": "/app", "PORT": str(self.m.settings.dynos.port), "DYNO": name})
        return env

    async def start(self, app: str, type: str, name: str, release: Release, size: str, command: str, *,
                    stdio: str = "log", extra_env: dict[str, str] | None = None, rows: int = 24,
                    cols: int = 80, attached: bool = False, early: EarlyBoot | None = None) -> LiveDyno:
        """Start one dyno. With ``early`` (early_boot.py) it boots from that deploy's tree before
        its release exists: no ledger row, no log line and no watch until a release takes it."""
        if self.m.closing:
            raise UserError("dynod is shutting down: no new dynos start; try again once it is back.")
        if app in self.m.retiring:
            raise UserError(f"{app} is being destroyed: no new dynos start.")
        if release.slug_id is None and early is None:
            raise UserError(f"{app} has no slug yet: deploy it first (dynoctl deploy DIR -a {app}).")
        spec_size = dyno_size(size)
        stages = [("begin", time.perf_counter())]
        uid, gid = self.m.settings.dynos.uid, self.m.settings.dynos.gid
        if early is not None:
            slug_dir = early.slug_dir
        else:
            assert release.slug_id is not None
            slug_dir = await self.slug_dir(release.slug_id, uid, gid)
        stack = await self.stack(app)
        stages.append(("slug+stack", time.perf_counter()))
        dyno_id = f"{app}.{name}.{secrets.token_hex(3)}"
        quota = spec_size.memory_mb * MiB
        limits = CgroupLimits(memory_max=int(quota * self.m.settings.dynos.hard_limit_ratio), memory_high=quota,
                              pids_max=min(spec_size.pids, self.m.settings.dynos.pids_max),
                              cpu_weight=spec_size.cpu_weight)
        # A warm dyno's stdio is made for a dyno that logs or for a one-off with pipes (the spawner
        # hands its stdin pipe over at assign time); a terminal is made at the fork, so a tty
        # one-off starts cold.
        warm = self.take_warm() if stdio in ("log", "pipes") else None
        if warm is not None:
            try:
                cgroup = self.m.cgroups.rename(warm.cgroup, dyno_id, limits)
            except OSError as exc:
                log.warning("warm dyno %s unusable (%s): starting cold", warm.pool_id, exc)
                self.m.nursery.start_soon(self.discard_warm, warm)
                warm = None
        if warm is None:
            cgroup = self.m.cgroups.create(dyno_id, limits)
            if self.primer is not None:
                # Its moves come after the fork, ~5 ms from now. Not before the mkdir: the no-op
                # move holds the kernel's cgroup_mutex while it waits, and a mkdir waits for that.
                self.primer.prime()
            address = self.m.network.pool.allocate()
        else:
            address = warm.address
        now = self.m.clock()
        record = DynoRecord(id=dyno_id, app=app, name=name, type=type, release=release.version,
                            size=spec_size.name, command=command, state=DynoState.STARTING, pid=None,
                            ip=address, port=self.m.settings.dynos.port, created_at=now,
                            state_changed_at=now, attached=attached, cgroup=recorded_cgroup.describe(cgroup))
        spec = DynoSpec(
            id=dyno_id, hostname=str(uuid.uuid4()),
            argv=[*INIT, "/bin/bash", "-c", PROFILE + command],
            env=self.environment(release, name, extra_env),
            lower=[str(slug_dir), str(stack)], mnt=self.m.mnt,
            # Born in its cgroup2 group where it has one (the spawner forks it there, or the child
            # joins it itself on a kernel without clone3); the rest it joins itself where that is
            # cheap (probe_joins), else wire moves it there.
            cgroup_procs=[] if warm is not None else (cgroup.procs_files() if self.children_join
                                                      else cgroup.birth_procs_files()),
            **app_identity(self.m.settings, self.m.ledger.app_uid(app, self.m.settings.dynos.uid_first,
                                                              self.m.settings.dynos.uid_count)),
            tmpfs_mb=self.m.settings.dynos.tmpfs_size_mb,
            # "bridge": the spawner makes a cold dyno's veth there itself, before it answers
            # (dynod.linux.veth; Spawned.wired), else wire makes it. A warm dyno has its veth.
            net={"ifname": DYNO_IFNAME, "address": address, "prefix": self.m.network.pool.prefix,
                 "gateway": self.m.network.pool.gateway, "on_bridge": self.m.settings.network.bridge,
                 **({"bridge": self.m.settings.network.bridge} if warm is None else {})},
            stdio=stdio, rows=rows, cols=cols,
            seccomp=seccomp_profile(self.m.settings, app),
        )
        stages.append(("cgroup", time.perf_counter()))
        self.m.watching.expect(dyno_id)  # its exit may come before it is in self.m.live
        try:
            if early is None:
                self.m.ledger.put_dyno(record)
            stages.append(("ledger", time.perf_counter()))
            if warm is not None:
                try:
                    spawned = await self.m._ask(lambda spawner: spawner.assign(warm.pool_id, spec))
                except SpawnerError as exc:
                    # It died in the pool an instant ago: give its group and address back, go cold.
                    log.warning("warm dyno %s unusable (%s): starting %s cold", warm.pool_id, exc, dyno_id)
                    await self.discard_warm(WarmDyno(warm.pool_id, warm.pid, address, cgroup))
                    warm = None
                    cgroup = self.m.cgroups.create(dyno_id, limits)
                    address = self.m.network.pool.allocate()
                    record = replace(record, ip=address, cgroup=recorded_cgroup.describe(cgroup))
                    spec.net = {**(spec.net or {}), "address": address, "bridge": self.m.settings.network.bridge}
                    if early is None:
                        self.m.ledger.put_dyno(record)
            if warm is None:
                spawned = await self.m._ask(lambda spawner: spawner.spawn(spec))
            stages.append(("spawn", time.perf_counter()))
        except BaseException:
            self.m.watching.unexpect(dyno_id)
            if early is None:
                self.m.ledger.delete_dyno(dyno_id)
            if warm is not None:
                warm.cgroup = cgroup
                self.m.nursery.start_soon(self.discard_warm, warm)
            else:
                self.m.network.pool.release(address)
                cgroup.remove()
            raise
        live = LiveDyno(replace(record, pid=spawned.pid), cgroup, spawned.fds)
        if early is not None:
            self.m.early[dyno_id] = live  # nobody's until a release takes it
        else:
            self.m.live[dyno_id] = live
        self.m.watching.registered(live)
        orphaned = False
        if early is None:
            try:
                self.m.ledger.set_dyno_state(dyno_id, DynoState.STARTING, pid=spawned.pid)
            except NotFound:
                orphaned = True  # its app was destroyed while it was being made: stop it once it runs
        if warm is None:  # a warm dyno was moved and wired while nobody waited
            try:
                await self.wire(address, spawned.pid, cgroup, network=not spawned.wired,
                                born_in=spec.cgroup_procs)
            except BaseException:
                with trio.CancelScope(shield=True):  # even when cancelled: never leave it waiting
                    await self.m.spawner.abort(dyno_id)  # the child exits; on_exit cleans up
                raise
        stages.append(("wire", time.perf_counter()))
        if self.m.address_claimed is not None:
            try:
                await self.m.address_claimed(app, address)
            except Exception as exc:  # the dyno still runs; its add-ons are out of its reach
                log.warning("add-on access for %s not granted: %s", dyno_id, exc)
        stages.append(("add-ons", time.perf_counter()))
        await self.m.spawner.go(dyno_id)
        stages.append(("go", time.perf_counter()))
        if warm is not None:
            self.m.nursery.start_soon(self.refill_after_exec, live)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("start %s: %s", dyno_id, " ".join(
                f"{name}={(t - prev) * 1000:.1f}ms" for (_, prev), (name, t) in zip(stages, stages[1:], strict=False)))
        if early is not None:
            return live  # early_boot.adopt says "Starting process" and watches it, if a release takes it
        if not attached:
            self.m.emit(live, f"Starting process with command `{command}`")
        self.m.watching.watch(live)
        if orphaned or app in self.m.retiring or self.m.closing:  # gone or shutting down meanwhile
            self.m.nursery.start_soon(self.m.stop, live, "retired")
        return live

    async def slug_dir(self, slug_id: str, uid: int, gid: int) -> Path:
        """The slug's unpacked dir; after the first dyno of a release, a dict lookup and a stat."""
        path = self.m._unpacked.get(slug_id)
        if path is None or not path.is_dir():
            path = await trio.to_thread.run_sync(self.m.slugs.unpacked, slug_id, uid, gid)
            self.m._unpacked[slug_id] = path
        return path

    async def stack(self, app: str) -> Path:
        """The stack's rootfs, built on first need (its progress goes to the app's log)."""
        if self.m._stack_path is None or not self.m._stack_path.is_dir():
            def progress(line: str) -> None:
                trio.from_thread.run_sync(self.m.logs.emit, app, "dynod", "stack", line)

            self.m._stack_path = await trio.to_thread.run_sync(self.m.stacks.ensure, self.m.settings.stack, progress)
        return self.m._stack_path

    def forget_stack(self) -> None:
        """The stack was rebuilt: look it up again for the next dyno."""
        self.m._stack_path = None

    async def wire(self, address: str, pid: int, cgroup: DynoCgroup, *, network: bool,
                   born_in: Sequence[str] = ()) -> None:
        """Move a new dyno into its cgroups (those it was not born in) and plug in its veth, all at
        once, before it may run."""
        moves = [procs for procs in cgroup.procs_files() if procs not in born_in]
        if not moves:  # it joined them all itself: no nursery, no threads but the veth's
            if network:
                await self.m.network.attach(address, pid)
            return
        async with trio.open_nursery() as nursery:
            for procs in moves:
                nursery.start_soon(trio.to_thread.run_sync, self.m.processes.join_cgroup, procs, pid)
            if network:
                nursery.start_soon(self.m.network.attach, address, pid)

    def take_warm(self) -> WarmDyno | None:
        # Its replacement is made once the taken dyno has exec'd (refill_after_exec): forking,
        # moving and wiring one takes ~4 ms of CPU across the spawner, dynod and the new child,
        # which on a 2-core host came out of the very start the warm dyno is there to speed up.
        return self.m._warm.pop(0) if self.m._warm else None

    async def refill_after_exec(self, live: LiveDyno) -> None:
        """Let keep_warm replace a taken warm dyno once that dyno has exec'd its init (or failed):
        the spawner says so when the child's close-on-exec error pipe closes, ~4 ms after go."""
        with trio.move_on_after(REFILL_WAIT_S):  # a dyno stuck before its exec must not empty the pool
            await live.started.wait()
        self.m._warm_changed.set()

    async def probe_joins(self) -> None:
        """Time, once, what a new dyno's own join of its v1 groups costs here (a real process
        moved into a real group of dynod's subtree, then removed): cheap (birth.CHEAP_JOIN_MS,
        favordynmods in effect, whether or not the mount table still says so) and cold dynos join
        themselves from now on. Before the pool fills: its moves would hide the grace period."""
        cgroup: DynoCgroup | None = None
        try:
            cgroup = self.m.cgroups.create(f"probe.{secrets.token_hex(4)}", WARM_LIMITS)
            took = await trio.to_thread.run_sync(cgroup.time_own_join)
        except OSError as exc:
            log.warning("cgroup join not timed (%s): dynod moves new dynos itself", exc)
            return
        finally:
            if cgroup is not None:
                cgroup.kill_all()
                # Shielded: a dynod stopped during the probe still removes its group.
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(cgroup.remove)
                    except OSError as exc:
                        log.warning("cgroup of the join probe not removed: %s", exc)
        if took is not None:
            self.children_join = took < CHEAP_JOIN_MS
            log.info("a new dyno's cgroup join takes %.2f ms here: %s", took,
                     "dynos join their groups themselves" if self.children_join else "dynod moves them")
            if not self.children_join:
                await self.start_primer()

    async def start_primer(self) -> None:
        """The move primer (cgroups/primer.py), once its thread is in its group: that one real
        move waits out a grace period of its own, here rather than in the first start."""
        if self.m.closing:
            return
        try:
            primer = await trio.to_thread.run_sync(self.m.cgroups.move_primer)
        except OSError as exc:
            log.warning("no move primer (%s): cold dynos wait out the cgroup lock's grace period", exc)
            return
        if primer is None:
            return
        if await trio.to_thread.run_sync(primer.wait_joined) is not None or self.m.closing:
            # It said why in the log; or dynod began to stop meanwhile, and stop_all has closed
            # the primer there was (none): this one would hold its group past the subtree's removal.
            primer.close()
            return
        self.primer = primer

    def close_primer(self) -> None:
        """Before dynod's subtree is removed: the primer's thread holds its group."""
        primer, self.primer = self.primer, None
        if primer is not None:
            primer.close()

    async def keep_warm(self) -> None:
        """Keep the pool at its target; started once probe_joins has timed the join."""
        while not self.m.closing:
            for _ in range(warm_pool.to_make(ready=len(self.m._warm), filling=self.m._warm_filling,
                                             target=self.m.settings.dynos.warm_pool, closing=self.m.closing,
                                             can_rename=self.m.cgroups.can_rename)):
                self.m._warm_filling += 1
                self.m.nursery.start_soon(self.make_warm)
            await self.m._warm_changed.wait()
            self.m._warm_changed = trio.Event()

    async def make_warm(self) -> None:
        pool_id = f"warm.{secrets.token_hex(4)}"
        cgroup: DynoCgroup | None = None
        address: str | None = None
        pid: int | None = None
        try:
            cgroup = self.m.cgroups.create(pool_id, WARM_LIMITS)
            address = self.m.network.pool.allocate()
            # Its root's tmpfs, /proc and /dev are made while it waits, and once wired its
            # interface is addressed (the rest needs the spec).
            net = PreparedNet(DYNO_IFNAME, address, self.m.network.pool.prefix, self.m.network.pool.gateway)
            pid = await self.m._ask(lambda spawner: spawner.prefork(
                pool_id, self.m.mnt, self.m.settings.dynos.tmpfs_size_mb, net))
            await self.wire(address, pid, cgroup, network=True)
            await self.m.spawner.wired(pool_id)
            if self.m.closing:
                raise UserError("dynod is shutting down")
            self.m._warm.append(WarmDyno(pool_id, pid, address, cgroup))
        except (OSError, SpawnerError, UserError) as exc:
            if not self.m.closing:
                log.warning("no warm dyno made: %s", exc)
            if cgroup is not None and address is not None and pid is not None:
                await self.discard_warm(WarmDyno(pool_id, pid, address, cgroup))
            else:
                self.m.network.pool.release(address)
                if cgroup is not None:
                    cgroup.remove()
            await trio.sleep(1)  # whatever failed, do not spin on it
        finally:
            self.m._warm_filling -= 1
            self.m._warm_changed.set()

    async def discard_warm(self, warm: WarmDyno) -> None:
        try:
            await self.m.spawner.kill(warm.pool_id, signal.SIGKILL)
        except SpawnerError:
            pass
        warm.cgroup.kill_all()
        try:
            await trio.to_thread.run_sync(warm.cgroup.remove)
        except OSError as exc:
            log.warning("cgroup of warm dyno %s not removed: %s", warm.pool_id, exc)
        self.m.network.pool.release(warm.address)

    async def run_container(self, spec: dict[str, Any], limits: CgroupLimits, *, output: Callable[[bytes], None],
                            timeout: float, attach: Callable[[int], Awaitable[object]] | None = None) -> int | None:
        """Run one container to its end (a build step); None if ``timeout`` passed and it was killed.

        Made exactly as a dyno is (same spawner, namespaces, cgroup limits, non-root uid), but not
        managed: nothing restarts it, and its output goes to ``output`` rather than the log stream.
        """
        task_id = spec["id"]
        cgroup = self.m.cgroups.create(task_id, limits)
        if self.primer is not None:
            self.primer.prime()  # a build container is moved after its fork, as a cold dyno is
        try:
            container = DynoSpec.from_json({**spec, "cgroup_procs": [], "mnt": self.m.mnt, "stdio": "log"})
        except TypeError as exc:  # a field the spawner would not know: dynod's own mistake
            cgroup.remove()
            raise UserError(f"The build container could not start: its spec is wrong ({exc}).") from None
        exits_send, exits_recv = trio.open_memory_channel[Exited](1)
        self.m._task_exits[task_id] = exits_send
        timed_out = False
        try:
            spawned = await self.m._ask(lambda spawner: spawner.spawn(container))
            try:
                await self.wire("", spawned.pid, cgroup, network=False)
                if attach is not None and not spawned.wired:  # its network, before it may run:
                    await attach(spawned.pid)  # a build's veth, where the spawner did not make it
            except BaseException:
                for fd in spawned.fds.values():
                    close_fd(fd)
                with trio.CancelScope(shield=True):
                    await self.m.spawner.abort(task_id)
                raise
            await self.m.spawner.go(task_id)
            async with trio.open_nursery() as nursery:
                for kind in ("stdout", "stderr"):
                    fd = spawned.fds.pop(kind, None)
                    if fd is not None:
                        nursery.start_soon(_copy_output, fd, output)
                with trio.move_on_after(timeout) as scope:
                    event = await exits_recv.receive()
                if scope.cancelled_caught:
                    timed_out = True
                    await self.m.spawner.kill(task_id, signal.SIGKILL)
                    cgroup.kill_all()
                    event = await exits_recv.receive()
                if event.error == SPAWNER_LOST:
                    cgroup.kill_all()  # nobody would reap it now: end it, and its output with it
            for fd in spawned.fds.values():
                close_fd(fd)
            if event.error == SPAWNER_LOST:
                raise UserError(f"The build failed: {SPAWNER_LOST}; dynod started a new one: build again.")
            if event.error:
                raise UserError(f"The build container could not start: {event.error.strip()}")
            return None if timed_out else event.status
        finally:
            self.m._task_exits.pop(task_id, None)
            cgroup.kill_all()  # first, and whatever happens: a build never outlives its request
            with trio.CancelScope(shield=True):
                try:
                    await self.m.spawner.forget(task_id)
                except SpawnerError:
                    pass
                await trio.to_thread.run_sync(cgroup.remove)


async def _copy_output(fd: int, output: Callable[[bytes], None]) -> None:
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            if not data:
                return
            output(data)
    finally:
        os.close(fd)
