"""The autoscaler's trio side: at the end of every window, decide each policy and carry it out.

Every change it makes goes through the platform's formation update, so the host's memory check
(``[dynos] memory_overcommit``) applies to it as to `ps:scale`: a refused step is logged with the
platform's reason and starts a cool-down, and the formation stays as it was. Each change and each
refusal is one line in the app's log stream (``dynod[autoscale]``) with its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import trio

from ..errors import NotFound, UserError
from .decision import Damping, Decision, Policy, decide
from .policy import AUTOSCALE_TYPE, check_policy, parse_goal
from .store import AutoscaleStore, StoredPolicy
from .windows import ResponseWindows

log = logging.getLogger("dynod.autoscale")

Formation = Callable[[str], Awaitable[list[dict[str, Any]]]]  # app -> [{"type", "quantity", ...}]
Scale = Callable[[str, str, int], Awaitable[object]]  # (app, type, quantity); UserError when refused
Emit = Callable[[str, str], None]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Autoscaler:
    def __init__(self, store: AutoscaleStore, *, windows: ResponseWindows, damping: Damping, formation: Formation,
                 scale: Scale, emit: Emit, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.windows = windows
        self.damping = damping
        self.formation = formation
        self.scale = scale
        self.emit = emit
        self.limit = limit
        self.clock = clock
        self._last: dict[tuple[str, str], tuple[float, Decision]] = {}
        for policy in store.all():
            windows.watch(policy.app)

    # -- the API's side --------------------------------------------------------------------------

    def enable(self, app: str, type: str, minimum: object, maximum: object, goal: str) -> dict[str, Any]:
        if type != AUTOSCALE_TYPE:
            raise UserError(f"Autoscaling is for web dynos only (it follows the router's response times), not "
                            f"{type[:40]!r}.")
        policy = check_policy(minimum, maximum, parse_goal(goal), limit=self.limit)
        old = self.store.get(app, type)
        stored = StoredPolicy(app, type, policy.minimum, policy.maximum, policy.p95_goal_ms, self.clock(),
                              None if old is None else old.last_change_at)
        self.store.put(stored)
        self.windows.watch(app)
        self.emit(app, f"Autoscaling enabled for {type}: {policy.minimum} to {policy.maximum} dynos, p95 goal "
                       f"{policy.p95_goal_ms:g} ms")
        return self._json(stored)

    def disable(self, app: str, type: str) -> None:
        if not self.store.remove(app, type):
            raise NotFound(f"Autoscaling is not enabled for {type[:40]} of {app}.")
        self._last.pop((app, type), None)
        if not self.store.all(app):
            self.windows.forget(app)
        self.emit(app, f"Autoscaling disabled for {type}; its dynos stay at their current quantity")

    def show(self, app: str) -> list[dict[str, Any]]:
        return [self._json(policy) for policy in self.store.all(app)]

    def app_destroyed(self, app: str) -> None:
        self.store.remove(app)
        self.windows.forget(app)
        for key in [k for k in self._last if k[0] == app]:
            del self._last[key]

    def _json(self, policy: StoredPolicy) -> dict[str, Any]:
        last = self._last.get((policy.app, policy.type))
        return {"app": {"name": policy.app}, "type": policy.type, "enabled": True, "min": policy.minimum,
                "max": policy.maximum, "p95_goal_ms": policy.p95_goal_ms, "enabled_at": _iso(policy.enabled_at),
                "last_change_at": None if policy.last_change_at is None else _iso(policy.last_change_at),
                "window_s": self.windows.window,
                "last_decision": None if last is None else {"at": _iso(last[0]), "quantity": last[1].quantity,
                                                            "reason": last[1].reason}}

    # -- the clock's side ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        window = self.windows.window
        while True:
            now = self.clock()
            # Just after each window ends, so the window just finished is complete.
            await trio.sleep(window - now % window + min(0.05, window / 10))
            for policy in self.store.all():
                try:
                    await self.evaluate(policy)
                except UserError as exc:  # the app went between reading the policies and its formation
                    log.debug("autoscaling %s of %s: %s", policy.type, policy.app, exc)
                except Exception:  # noqa: BLE001 - one app's trouble must not stop the others' scaling
                    log.exception("autoscaling %s of %s", policy.type, policy.app)

    async def evaluate(self, policy: StoredPolicy) -> Decision | None:
        rows = {row["type"]: row for row in await self.formation(policy.app)}
        row = rows.get(policy.type)
        if row is None:
            return None  # no such process type released yet: nothing to scale
        quantity = int(row["quantity"])
        now = self.clock()
        count = max(self.damping.up_windows, self.damping.down_windows)
        decision = decide(self.windows.complete(policy.app, count, now), quantity,
                          Policy(policy.minimum, policy.maximum, policy.p95_goal_ms), self.damping,
                          last_change_at=policy.last_change_at, now=now, since=policy.enabled_at)
        self._last[(policy.app, policy.type)] = (now, decision)
        if decision.quantity == quantity:
            return decision
        self.store.changed(policy.app, policy.type, now)  # a refused step cools down too: no retry storm
        try:
            await self.scale(policy.app, policy.type, decision.quantity)
        except UserError as exc:
            self.emit(policy.app, f"Autoscaling: {policy.type} stays at {quantity} (wanted {decision.quantity}: "
                                  f"{decision.reason}): the platform refused: {exc}")
            return Decision(quantity, f"refused: {exc}")
        self.emit(policy.app, f"Autoscaling: scaled {policy.type} from {quantity} to {decision.quantity}: "
                              f"{decision.reason}")
        return decision
