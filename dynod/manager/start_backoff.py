"""The start-failure back-off: a dyno slot whose start fails waits 1, 2, 4 ... 60 s before its next try.

A start that fails before the app's process runs (a slug that will not unpack, no addresses left,
the spawner gone) is dynod's failure, not a crash: the restart policy's cool-off does not apply and
nothing is logged as a crash. Without a pause the reconcile loop would try again at once, for ever.
The pause doubles with each failure in a row and is capped at a minute; a start that succeeds
forgets the slot. Pure: time comes in as arguments.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

FIRST_WAIT = 1.0
MAX_WAIT = 60.0

Slot = TypeVar("Slot", bound=Hashable)


def backoff_wait(failures: int) -> float:
    """Seconds to wait after the n-th failure in a row (n >= 1): 1, 2, 4 ... capped at 60."""
    if failures < 1:
        return 0.0
    return min(MAX_WAIT, FIRST_WAIT * 2.0 ** min(failures - 1, 16))


@dataclass(slots=True)
class StartBackoff(Generic[Slot]):
    # slot -> (not before, failures in a row)
    _failed: dict[Slot, tuple[float, int]] = field(default_factory=dict)

    def failed(self, slot: Slot, now: float) -> float:
        """Count a failed start; returns when the slot may be tried again."""
        _, failures = self._failed.get(slot, (0.0, 0))
        until = now + backoff_wait(failures + 1)
        self._failed[slot] = (until, failures + 1)
        return until

    def succeeded(self, slot: Slot) -> None:
        self._failed.pop(slot, None)

    def waiting(self, slot: Slot, now: float) -> bool:
        """True while the slot's last failure's wait has not passed."""
        return self._failed.get(slot, (0.0, 0))[0] > now

    def failures(self, slot: Slot) -> int:
        return self._failed.get(slot, (0.0, 0))[1]

    def deadlines(self) -> list[float]:
        """When each waiting slot may be tried again (the reconcile loop wakes for them)."""
        return [until for until, _ in self._failed.values()]
