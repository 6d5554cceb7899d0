"""Early boot: a deploy's new dynos booted from the build's tree while its slug is packed.

A release names its slug by the sha256 of the packed tarball, so its dynos could start only once
the pack was done (~0.1 s for a 40 MB venv, seconds for a big slug), and then boot (gunicorn
~0.1 s): the two added up on every deploy. The tree those dynos run is there before the tarball
is: the build's /app, checked against the slug rules and moved into the slug store
(``SlugStore.adopt_tree``). So the deploy boots the formation's dynos from it at once, with the
config as it is now, beside the pack. Until a release takes them they are nobody's: not in the
ledger, not in ``ps``, not routed, their output held in their pipes.

When the release is made, the reconcile pass that starts its dynos takes each early dyno that fits
a slot instead of starting one (``take``): same app, name, size and command, the release's slug
packed from that very tree, and the environment the release gives that slot. From then on it is
an ordinary dyno of the release, its log beginning with "Starting process". Whatever no slot took
(the config changed meanwhile, the formation was scaled), and every early dyno of a deploy whose
pack or release failed, is killed; nothing of it reaches the app's log or the ledger.

Not booted early: an app with a release phase (its command, a migration say, must run before any
dyno of the new code), one asleep, being destroyed or on a dynod that is stopping, and past
``EARLY_MAX`` dynos per deploy (the rest start when the release is made, as before).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ..errors import UserError
from ..model import DEFAULT_SIZE, DynoState, Formation, Release
from .live import LiveDyno, log
from .reconcile import ONE_OFF_TYPE, SCHEDULER_TYPE, Start

if TYPE_CHECKING:
    from .dynos import DynoManager

WEB = "web"
RELEASE_PHASE = "release"  # a process type that runs before the release's dynos (deploys.py)
# Early dynos run beside the ones they will replace, for as long as the pack takes: a few dynos
# cut a deploy's wait; a formation of hundreds would double its memory for that time.
EARLY_MAX = 4
EARLY_RELEASE = 0  # the record's release until one takes it: no release has version 0
MOUNT_WAIT = 10.0  # seconds for an early dyno to have its root before its tree is renamed
END_WAIT = 10.0  # seconds to wait for a killed early dyno's exit before its tree is removed


class EarlyBoot:
    """One deploy's early dynos, from their start to the release that takes them, or their end."""

    def __init__(self, manager: DynoManager, app: str, slug_dir: Path, release: Release,
                 slots: list[tuple[str, str, str]]) -> None:
        self.m = manager
        self.app = app
        self.slug_dir = slug_dir  # the adopted tree they boot from (it holds app/)
        self.release = release  # what they are started with: the config as it was at the boot
        self.slots = slots  # (type, name, size) of each, in the formation's order
        self.slug_id: str | None = None  # the slug packed from slug_dir, once it is known
        self.dynos: list[LiveDyno] = []
        self.booted = trio.Event()  # every start has returned or failed
        self.ended = False

    async def boot(self) -> None:
        """Start them side by side (each takes a warm dyno where the pool has one): one after
        the other, the last of a few would begin after a small slug's pack was done."""
        try:
            async with trio.open_nursery() as nursery:
                for type, name, size in self.slots:
                    nursery.start_soon(self._boot_one, type, name, size)
        finally:
            self.booted.set()

    async def _boot_one(self, type: str, name: str, size: str) -> None:
        if self.ended or self.m.closing:
            return
        try:
            live = await self.m.starting.start(self.app, type, name, self.release, size,
                                               self.release.process_types[type], early=self)
        except Exception as exc:  # the dyno starts the usual way when the release is made
            log.info("early boot of %s %s: %s", self.app, name, exc)
            return
        self.dynos.append(live)
        if self.ended:
            await self.kill(live)

    async def wait_mounted(self) -> None:
        """Until every early dyno has its root (it has exec'd, or it is gone): the spawner answers
        before the child mounts its layers, and the tree is renamed once the slug is packed. One
        still not running after MOUNT_WAIT is killed first (its mount would find no tree)."""
        await self.booted.wait()
        with trio.move_on_after(MOUNT_WAIT):
            for live in self.dynos:
                await live.started.wait()
        for live in list(self.dynos):
            if not live.started.is_set():
                log.info("early dyno %s not running after %g s: killed", live.id, MOUNT_WAIT)
                self.dynos.remove(live)
                await self.kill(live)

    def packed(self, slug_id: str) -> None:
        """The slug packed from their tree: a release of it may take them."""
        self.slug_id = slug_id

    def take(self, action: Start, release: Release) -> LiveDyno | None:
        """The early dyno that fits ``action``'s slot of ``release``, taken out of this boot."""
        if (self.ended or release.slug_id is None or release.slug_id != self.slug_id
                or self.app in self.m.retiring or self.m.closing):
            return None
        for live in self.dynos:
            if (live.name == action.name and live.record.size.lower() == action.size.lower()
                    and live.record.command == action.command and not live.exited.is_set()
                    and self.m.early.get(live.id) is live and self.release.config == release.config):
                self.dynos.remove(live)
                return live
        return None

    async def settle(self) -> None:
        """After the release was made: its reconcile pass takes what fits; the rest is killed."""
        await self.booted.wait()
        if self.slug_id is not None and not self.m.closing and self.app not in self.m.retiring:
            try:
                await self.m.reconcile_app(self.app)
            except UserError as exc:  # the app went meanwhile: the pass of the manager's loop says it
                log.info("early boot of %s not settled: %s", self.app, exc)
        await self.end(wait=False)

    async def end(self, *, wait: bool = True) -> None:
        """Kill every early dyno no release took; with ``wait``, until each has exited (its tree may
        be removed next)."""
        self.ended = True
        if self.m.early_boots.get(self.app) is self:
            del self.m.early_boots[self.app]
        await self.booted.wait()
        left, self.dynos = self.dynos, []
        for live in left:
            await self.kill(live)
        if wait:
            with trio.move_on_after(END_WAIT):
                for live in left:
                    await live.exited.wait()

    async def kill(self, live: LiveDyno) -> None:
        if live.exited.is_set():
            return
        live.stopping = True
        await self.m.stopping.kill_now(live)


def early_slots(manager: DynoManager, app: str, process_types: dict[str, str]) -> list[tuple[str, str, str]]:
    """(type, name, size) of the formation's dynos a deploy of ``process_types`` may boot early."""
    if (manager.closing or app in manager.retiring or manager.is_sleeping(app)
            or RELEASE_PHASE in process_types):
        return []
    slots: list[tuple[str, str, str]] = []
    formation = manager.ledger.get_formation(app)
    if WEB not in {row.type for row in formation} and WEB in process_types:
        # The app's first deploy with a web type: the release scales web to 1 (the ledger's
        # default web formation, as on Heroku), so its web.1 may boot now too.
        formation = [*formation, Formation(app=app, type=WEB, quantity=1, size=DEFAULT_SIZE)]
    for row in sorted(formation, key=lambda f: f.type):
        if row.type in (ONE_OFF_TYPE, SCHEDULER_TYPE, RELEASE_PHASE) or row.type not in process_types:
            continue
        for index in range(1, row.quantity + 1):
            slots.append((row.type, f"{row.type}.{index}", row.size))
    return slots[:EARLY_MAX]


def adopt(manager: DynoManager, live: LiveDyno, release: Release) -> None:
    """An early dyno taken by ``release``: from now on a dyno of it like any other."""
    manager.early.pop(live.id, None)
    live.record = replace(live.record, release=release.version, state=DynoState.STARTING)
    manager.live[live.id] = live
    manager.ledger.put_dyno(live.record)
    manager.emit(live, f"Starting process with command `{live.record.command}`")
    manager.watching.watch(live)
