"""The stop stage: Heroku's stop (the routes first, SIGTERM to every process but the init, the
stop timeout, R12 and SIGKILL) and dynod's own kills (R10, R15). Signals go through the
``Processes`` seam (runtime.py), so the deadlines are unit-tested on a fake kernel.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import trio

from ..linux.spawner_client import SpawnerError
from .live import ROUTES_SETTLE, LiveDyno

if TYPE_CHECKING:
    from .dynos import DynoManager


class Stopping:
    def __init__(self, manager: DynoManager) -> None:
        self.m = manager

    async def stop(self, live: LiveDyno, reason: str = "") -> int | None:
        """Heroku's stop: SIGTERM to every process, a grace period, then SIGKILL."""
        if live.stopping:
            await live.exited.wait()
            return live.exit_status
        live.stopping = True
        self.m.wake()
        if live.record.type == "web":
            self.m.on_routes_changed()  # no new requests for a dyno on its way down...
            if self.m.routes_flushed is not None:
                await self.m.routes_flushed()  # ...and none in the router's hands when SIGTERM goes:
                # the router's parent has the routes now; its workers apply them on their next turn.
                # A request sent after SIGTERM to a server that stopped accepting waits in its
                # backlog, and the reset at exit dies with the netns: the client would see an H12.
                await trio.sleep(ROUTES_SETTLE)
        if not live.exited.is_set():
            if not live.record.attached:
                self.m.emit(live, "Stopping all processes with SIGTERM")
            self.signal_all(live, signal.SIGTERM)
            with trio.move_on_after(self.m.settings.dynos.stop_timeout):
                await live.exited.wait()
            if not live.exited.is_set():
                self.m.emit(live, f"Error R12 (Exit timeout) -> At least one process failed to exit within "
                                f"{self.m.settings.dynos.stop_timeout:g} seconds of SIGTERM")
                self.m.emit(live, "Stopping remaining processes with SIGKILL")
                await self.kill_now(live)
                await live.exited.wait()
        return live.exit_status

    async def kill(self, live: LiveDyno, why: str) -> None:
        """dynod's own kill (R10, R15): the dyno counts as crashed and is restarted."""
        live.killed_for = why
        self.m.emit(live, "Stopping process with SIGKILL")
        await self.kill_now(live)

    def signal_all(self, live: LiveDyno, sig: int) -> None:
        if live.cgroup is None:
            return
        for pid in live.cgroup.pids():
            if pid == live.record.pid:
                continue  # tini forwards to its child's group; the app must see SIGTERM only once
            self.m.processes.signal(pid, sig)
        if len(live.cgroup.pids()) <= 1 and live.record.pid:
            # Only the init is left (or nothing): stop it too, it owns no app to wait for.
            self.m.processes.signal(live.record.pid, sig)

    async def kill_now(self, live: LiveDyno) -> None:
        # SIGKILL to PID 1 of the dyno's PID namespace takes every process in it.
        try:
            await self.m.spawner.kill(live.id, signal.SIGKILL)
        except SpawnerError:
            pass
        if live.cgroup is not None:
            live.cgroup.kill_all()

    async def kill_and_wait(self, live: LiveDyno, wait: float = 10.0) -> None:
        """SIGKILL, then until its exit has been handled (its group and address given back)."""
        await self.kill_now(live)
        with trio.move_on_after(wait):
            await live.exited.wait()

    async def stop_all(self) -> None:
        self.m.closing = True
        self.m._warm_changed.set()
        async with trio.open_nursery() as nursery:
            while self.m._warm:
                nursery.start_soon(self.m.starting.discard_warm, self.m._warm.pop())
            for live in list(self.m.live.values()):
                nursery.start_soon(self.stop, live, "shutdown")
            for boot in list(self.m.early_boots.values()):
                nursery.start_soon(boot.end)
            for live in list(self.m.early.values()):  # any no boot holds any more: never left running
                nursery.start_soon(self.kill_and_wait, live)
        self.m.starting.close_primer()  # nothing starts any more; its group goes with the subtree
