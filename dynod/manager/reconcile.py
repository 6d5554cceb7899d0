"""Reconcile: one app's desired formation and its actual dynos in, the actions to converge out.

Rules (Heroku's dyno manager, as its Dev Center describes it):
- a process type scaled to N has dynos ``type.1`` .. ``type.N`` on the current release, each
  with the formation's size; a missing slot starts;
- a slot whose dyno crashed starts again only once ``now >= restart_at[dyno_id]`` (the restart
  policy's cool-off; no entry means at once); a crash on an older release or size restarts at
  once, since a new release resets the cool-off;
- a dyno on an older release or of the wrong size is replaced: the new one starts at once and
  the old one stops (Heroku restarts every dyno on a new release, it does not wait);
- indices above N stop; every dyno of a type the release no longer declares stops; with no
  release at all nothing runs;
- one-off dynos (type ``run``, or attached to a terminal) are never touched;
- a dyno already ``down`` is on its way out and is never stopped twice; its slot counts as
  empty, so ``ps:stop web.1`` is followed by a fresh web.1, as on Heroku's Common Runtime.

With **preboot** (Heroku's app feature; web dynos only) the order is the other way round: a web
slot whose dyno is on an older release (or size) starts its replacement but keeps the old dyno,
and the old web dynos stop only once every web slot has a fitting dyno that is ``up``: Heroku
switches the routes over all at once, then sends SIGTERM. A replacement that crashes (or hits
R10) is restarted on the restart policy's cool-off while the old dyno keeps serving.
``ps:restart`` and daily cycling take the same path with preboot: the manager names the web dynos
to restart in ``replacing``, and such a dyno no longer fits its slot, so it is replaced
new-before-old like a dyno of an older release (stopped as ``restart``).

A ``Start`` for a slot replaces that slot's crashed records (the manager drops them as it
starts the new dyno), so they get no Stop of their own. A crashed record that no Start replaces
(its slot scaled away, or a healthy dyno already runs there) gets a ``Stop``, which for a dyno
with no process left only asks that its record be removed. Output order is fixed: every Start
by (type, index), then every Stop by (type, index, id), whatever order the inputs came in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ..model import DynoRecord, DynoState, Formation, Release

ONE_OFF_TYPE = "run"
SCHEDULER_TYPE = "scheduler"  # a scheduler job's run, scheduler.N: a one-off too (docs/scheduler.md)
PREBOOT_TYPE = "web"  # preboot changes the order for web dynos only

# Why a dyno is stopped; the manager logs it (Heroku: "Stopping all processes with SIGTERM").
SCALED_DOWN = "scaled down"
NEW_RELEASE = "new release"
RESIZED = "resized"
TYPE_REMOVED = "process type removed"
NO_RELEASE = "no release"
DUPLICATE = "duplicate"
REPLACED = "replaced"  # a crashed dyno's record, once its slot starts again
RESTART = "restart"  # ps:restart or daily cycling, replaced new-before-old under preboot


@dataclass(frozen=True, slots=True)
class Start:
    type: str
    name: str  # web.1
    release: int
    size: str
    command: str


@dataclass(frozen=True, slots=True)
class Stop:
    dyno_id: str
    reason: str


Action = Start | Stop

_RUNNING = (DynoState.STARTING, DynoState.UP)


def is_one_off(dyno: DynoRecord) -> bool:
    return dyno.type in (ONE_OFF_TYPE, SCHEDULER_TYPE) or dyno.attached


def reconcile(formation: list[Formation], release: Release | None, dynos: list[DynoRecord], *,
              now: float, restart_at: dict[str, float], preboot: bool = False,
              replacing: Collection[str] = frozenset()) -> list[Action]:
    desired = _desired_slots(formation, release)

    def _fits(dyno: DynoRecord, slot: Formation, release: Release) -> bool:
        return _fits_slot(dyno, slot, release) and dyno.id not in replacing

    def _why_replaced(dyno: DynoRecord, release: Release) -> str:
        return RESTART if dyno.id in replacing else _why_outdated(dyno, release)

    managed: dict[str, list[DynoRecord]] = {}
    for dyno in sorted(dynos, key=_dyno_order):
        if not is_one_off(dyno) and dyno.state != DynoState.DOWN:
            managed.setdefault(dyno.name, []).append(dyno)
    # Preboot holds the old web dynos until every web slot has a fitting dyno up.
    hold_old_web = preboot and release is not None and not all(
        any(d.state == DynoState.UP and _fits(d, slot, release) for d in managed.get(name, []))
        for name, slot in desired.items() if slot.type == PREBOOT_TYPE)

    starts: list[Start] = []
    stops: list[Stop] = []
    for name, here in managed.items():
        if name not in desired:
            stops.extend(Stop(d.id, _why_unwanted(d, release)) for d in here)

    for name, slot in desired.items():
        assert release is not None  # desired is empty without a release
        here = managed.get(name, [])
        running = [d for d in here if d.state in _RUNNING]
        crashed = [d for d in here if d.state == DynoState.CRASHED]
        fitting = [d for d in running if _fits(d, slot, release)]
        start = Start(type=slot.type, name=name, release=release.version, size=slot.size,
                      command=release.process_types[slot.type])
        prebooting = preboot and slot.type == PREBOOT_TYPE
        if fitting:
            keep = fitting[0]
            for d in running:
                if d is keep:
                    continue
                if _fits(d, slot, release):
                    stops.append(Stop(d.id, DUPLICATE))
                elif not (prebooting and hold_old_web):
                    stops.append(Stop(d.id, _why_replaced(d, release)))
            stops.extend(Stop(d.id, REPLACED) for d in crashed)
        elif running and prebooting:
            # The old dyno serves on while its replacement boots; a crashed replacement waits
            # out its cool-off (a new release whose dynos never come up keeps the old ones).
            new_crashes = [d for d in crashed if _fits(d, slot, release)]
            latest = max(new_crashes, key=lambda d: (d.state_changed_at, d.id)) if new_crashes else None
            if latest is None or now >= restart_at.get(latest.id, now):
                starts.append(start)  # it replaces the slot's crashed records
            else:  # still cooling off: ps shows the latest crash beside the old dyno
                stops.extend(Stop(d.id, REPLACED) for d in crashed if d is not latest)
        elif running:
            starts.append(start)
            stops.extend(Stop(d.id, _why_replaced(d, release)) for d in running)
        elif crashed:
            latest = max(crashed, key=lambda d: (d.state_changed_at, d.id))
            if not _fits(latest, slot, release) or now >= restart_at.get(latest.id, now):
                starts.append(start)
            else:  # still cooling off: keep the latest record (ps shows "crashed"), drop older ones
                stops.extend(Stop(d.id, REPLACED) for d in crashed if d is not latest)
        else:
            starts.append(start)

    starts.sort(key=lambda s: (s.type, _index(s.name)))
    order = {d.id: _dyno_order(d) for d in dynos}
    stops.sort(key=lambda s: order[s.dyno_id])
    return [*starts, *stops]


def _desired_slots(formation: Iterable[Formation], release: Release | None) -> dict[str, Formation]:
    if release is None:
        return {}
    slots: dict[str, Formation] = {}
    for row in sorted(formation, key=lambda f: f.type):
        if row.type in (ONE_OFF_TYPE, SCHEDULER_TYPE) or row.type not in release.process_types:
            continue
        for index in range(1, row.quantity + 1):
            slots[f"{row.type}.{index}"] = row
    return slots


def _fits_slot(dyno: DynoRecord, slot: Formation, release: Release) -> bool:
    return dyno.release == release.version and dyno.size.lower() == slot.size.lower()


def _why_outdated(dyno: DynoRecord, release: Release) -> str:
    return NEW_RELEASE if dyno.release != release.version else RESIZED


def _why_unwanted(dyno: DynoRecord, release: Release | None) -> str:
    if release is None:
        return NO_RELEASE
    if dyno.type not in release.process_types:
        return TYPE_REMOVED
    return SCALED_DOWN


def _index(name: str) -> int:
    _, _, index = name.rpartition(".")
    return int(index) if index.isdigit() else -1


def _dyno_order(dyno: DynoRecord) -> tuple[str, int, str, float, str]:
    return (dyno.type, _index(dyno.name), dyno.name, dyno.created_at, dyno.id)
