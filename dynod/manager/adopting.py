"""The adopt stage: dynos found again after a dynod restart (the spawner's hello, the ledger's
records, their recorded cgroups: recorded_cgroup.py), and after the spawner itself was replaced
(each still-running init followed through a pidfd). What nobody knows any more is killed and
cleared.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import trio

from ..linux.cgroups import DynoCgroup
from ..linux.cgroups.paths import CgroupMounts, read_mounts
from ..linux.spawn_messages import Exited
from ..model import DynoRecord, DynoState, MiB, dyno_size
from . import recorded_cgroup
from .live import SPAWNER_LOST, LiveDyno, close_fd, log
from .runtime import Spawner

if TYPE_CHECKING:
    from .dynos import DynoManager


class Adopting:
    def __init__(self, manager: DynoManager) -> None:
        self.m = manager

    async def spawner_replaced(self, spawner: Spawner) -> None:
        """The spawner died (a kill -9, a bug) and ``spawner`` is its successor, already running.

        Nothing it forked died with it (dynos do not get its death signal), but nobody is their
        parent any more: a dyno that still runs is re-adopted through a pidfd on its init, which
        says when it exits (its exit status went with the old spawner), and is stopped through its
        cgroup as always. One that cannot be followed is killed by its cgroup and replaced. Builds
        in flight fail (their containers are killed), and warm dynos are thrown away.
        """
        self.m.spawner = spawner
        for task_id, channel in [*self.m._task_exits.items(), *self.m.exec_events.items()]:
            try:
                channel.send_nowait(Exited(task_id, 0, None, SPAWNER_LOST))
            except trio.WouldBlock:
                pass  # its exit is already queued
        while self.m._warm:
            self.m.nursery.start_soon(self.m.starting.discard_warm, self.m._warm.pop())
        await self.m._ask(lambda new: new.hello())  # makes this dynod the new spawner's client
        for live in list(self.m.early.values()):  # nobody's yet: killed, their slots start as usual
            if live.cgroup is not None:
                live.cgroup.kill_all()
            await self.m.watching.on_early_exit(live, Exited(live.id, live.record.pid or 0))
        for live in list(self.m.live.values()):
            if live.exited.is_set():
                continue
            pidfd = self.pidfd_of(live)
            if pidfd is not None:
                live.started.set()  # if it had not exec'd yet, it exits at once: its go pipe is gone
                self.m.nursery.start_soon(self.follow_orphan, live, pidfd)
                log.warning("re-adopted %s (pid %s) after the spawner was lost", live.id, live.record.pid)
                continue
            log.warning("%s cannot be followed after the spawner was lost: killed by its cgroup", live.id)
            live.stopping = True  # not the app's fault: no crash, its replacement starts at once
            if live.cgroup is not None:
                live.cgroup.kill_all()
            await self.m.watching.on_exit(live, Exited(live.id, live.record.pid or 0))
        self.m.nursery.start_soon(self.m.watching.events)
        self.m._warm_changed.set()
        self.m.wake()

    def pidfd_of(self, live: LiveDyno) -> int | None:
        """A handle on the dyno's init, if it still runs in the dyno's cgroup (so never a reused pid)."""
        if not live.record.pid or live.cgroup is None:
            return None
        return self.m.processes.follow(live.record.pid, live.cgroup.pids)

    async def follow_orphan(self, live: LiveDyno, pidfd: int) -> None:
        await self.m.processes.wait_exit(pidfd)
        if not live.exited.is_set():
            await self.m.watching.on_exit(live, Exited(live.id, live.record.pid or 0))

    def open_recorded(self, record: DynoRecord, quota: int, mounts: CgroupMounts,
                      resolved: dict[str, bool] | None = None) -> DynoCgroup | None:
        """The dyno's group where its record says (a dynod started from another cgroup made it
        elsewhere), else by name under this dynod's subtree (records from before schema v6)."""
        group = recorded_cgroup.reopen(record.cgroup, record.id, quota, mounts, resolved)
        return group if group is not None else self.m.cgroups.open(record.id, quota)

    def remove_old_subtrees(self, group: DynoCgroup) -> None:
        for removed in recorded_cgroup.remove_old_subtrees(
                recorded_cgroup.directories(group), self.m.cgroups.roots(), self.m.settings.cgroups.name):
            log.info("removed %s: the last dyno an earlier dynod made there has gone", removed)

    async def adopt(self) -> None:
        adopted = {d.id: d for d in await self.m.spawner.hello()}
        records = {r.id: r for r in self.m.ledger.list_dynos()}
        mounts = read_mounts()
        resolved: dict[str, bool] = {}  # the recorded groups' parents found free of links, this pass
        for dyno_id, found in adopted.items():
            record = records.get(dyno_id)
            if record is None:
                # The spawner knows a dyno the ledger does not: it belongs to no app any more.
                for fd in found.fds.values():
                    close_fd(fd)
                if found.status is None:
                    await self.m.spawner.kill(dyno_id, signal.SIGKILL)
                else:
                    await self.m.spawner.forget(dyno_id)
                continue
            quota = dyno_size(record.size).memory_mb * MiB
            live = LiveDyno(record, self.open_recorded(record, quota, mounts, resolved), found.fds)
            self.m.live[dyno_id] = live
            if record.ip:
                self.m.network.pool.claim(record.ip)
            if found.started or found.status is not None:
                live.started.set()
            elif found.status is None:
                # Made but never told to go (dynod died in between): it would wait forever. The
                # spawner ignores this if go was sent; then its exec is a moment away.
                await self.m.spawner.abort(dyno_id)
            if found.status is not None:
                await self.m.watching.on_exit(live, found)
                continue
            if record.attached:
                # Its terminal went with the old dynod; Heroku stops a one-off whose client is gone.
                for fd in live.fds.values():
                    close_fd(fd)
                live.fds.clear()
                self.m.nursery.start_soon(self.m.stop, live, "detached client")
            self.m.watching.watch(live)
        for dyno_id, record in records.items():
            if dyno_id in adopted:
                continue
            if record.state == DynoState.CRASHED:
                self.m.restart_at.setdefault(dyno_id, self.m.clock())
                continue
            # Gone while nobody watched (the spawner died too, or the host rebooted). Its group
            # may be in another dynod's subtree, where the sweep below does not look.
            stale = recorded_cgroup.reopen(record.cgroup, dyno_id, 0, mounts)
            if stale is not None:
                stale.kill_all()
                try:
                    await trio.to_thread.run_sync(stale.remove)
                    self.remove_old_subtrees(stale)
                except OSError as exc:
                    log.warning("stale cgroup %s not removed: %s", dyno_id, exc)
            self.m.ledger.delete_dyno(dyno_id)
        for name in self.m.cgroups.names():
            if name not in self.m.live:
                cgroup = self.m.cgroups.open(name, 0)
                if cgroup is not None:
                    cgroup.kill_all()
                    try:
                        await trio.to_thread.run_sync(cgroup.remove)
                    except OSError as exc:
                        log.warning("stale cgroup %s not removed: %s", name, exc)
        await self.m.network.prune(d.record.ip for d in self.m.live.values() if d.record.ip)
