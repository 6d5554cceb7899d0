"""Eco dynos sleep: when an app should go to sleep, and what runs while it sleeps. No I/O.

Heroku (Dev Center, *Eco Dyno Hours*): an app on eco dynos whose web dynos get no request for
30 minutes sleeps, its workers with it; the next request wakes it and waits while a web dyno boots.
Only eco dynos sleep: an app on any other size never does. Eco cannot be mixed with other sizes on
Heroku, so "the app is on eco" is one fact about its whole formation.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from ..errors import UserError
from ..model import Formation, dyno_size

ECO = "eco"
log = logging.getLogger(__name__)


def sleeps(formation: Iterable[Formation]) -> bool:
    """Whether an app with this formation may sleep: it runs web dynos (a request can wake it) and
    every process type it runs is eco."""
    running = [f for f in formation if f.quantity > 0]
    return any(f.type == "web" for f in running) and all(_is_eco(f.size) for f in running)


def should_sleep(formation: Iterable[Formation], *, last_request_at: float, now: float, idle_after: float) -> bool:
    """An eco app sleeps once its web dynos had no request for ``idle_after`` seconds.

    ``last_request_at`` is the router's view: its last request line for the app, or when dynod
    began watching (or the app last woke), whichever is later."""
    return sleeps(formation) and now - last_request_at >= idle_after


def sleep_at(formation: Iterable[Formation], *, last_request_at: float, idle_after: float) -> float | None:
    """When the app would fall asleep if no request comes, or None if it never sleeps."""
    return last_request_at + idle_after if sleeps(formation) else None


def asleep(formation: Iterable[Formation]) -> list[Formation]:
    """What the manager runs for a sleeping app: its formation with every quantity at 0 (its
    one-off dynos are not part of a formation and are left alone)."""
    return [replace(f, quantity=0) for f in formation]


def check_sizes(current: Iterable[Formation], changes: Iterable[tuple[str, int | None, str | None]]) -> None:
    """Heroku's rule: eco dynos cannot run beside other sizes in one app (an eco app sleeps, the
    others never do). ``changes`` are (type, quantity or None, size or None) as ps:scale asks for
    them; process types scaled to 0 do not count."""
    rows = {f.type: (f.quantity, f.size) for f in current}
    for type_, quantity, size in changes:
        old_quantity, old_size = rows.get(type_, (0, ""))
        rows[type_] = (old_quantity if quantity is None else quantity, old_size if size is None else size)
    running = {t: s for t, (q, s) in rows.items() if q > 0}
    eco = sorted(t for t, s in running.items() if _is_eco(s))
    other = sorted(t for t, s in running.items() if not _is_eco(s))
    if eco and other:
        raise UserError(f"Eco dynos cannot run beside other sizes: {', '.join(eco)} would be eco and "
                        f"{', '.join(other)} not. Only eco dynos sleep; put every process type on eco "
                        f"(e.g. {' '.join(f'{t}=1:eco' for t in other)}) or none.")


def _is_eco(size: str) -> bool:
    try:
        return dyno_size(size).name == ECO
    except UserError:
        return False


class SleepState:
    """Which apps sleep (kept in ``path``, so a restarted dynod leaves them asleep) and when the
    router last saw a request for each app (in memory: after a restart every app counts as just
    seen, so nothing falls asleep sooner than ``idle_after`` after dynod starts)."""

    def __init__(self, path: Path, *, idle_after: float) -> None:
        self.path = path
        self.idle_after = idle_after
        self.last_request: dict[str, float] = {}
        self.sleeping: set[str] = set(self._load())
        # When each app fell asleep (ps shows it); for those read back, the file's last change.
        self.since: dict[str, float] = dict.fromkeys(self.sleeping, _mtime(path))

    def _load(self) -> list[str]:
        try:
            names = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): every app counts as awake", self.path, exc)
            return []
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(sorted(self.sleeping)))
        os.replace(tmp, self.path)

    def request_seen(self, app: str, now: float) -> None:
        self.last_request[app] = now

    def last_request_at(self, app: str, now: float) -> float:
        return self.last_request.setdefault(app, now)

    def fall_asleep(self, app: str, now: float) -> None:
        self.sleeping.add(app)
        self.since[app] = now
        self._save()

    def wake(self, app: str, now: float) -> bool:
        """True if the app was asleep. Its idle time counts from now either way."""
        self.last_request[app] = now
        if app not in self.sleeping:
            return False
        self.sleeping.discard(app)
        self.since.pop(app, None)
        self._save()
        return True

    def forget(self, apps: set[str]) -> None:
        """Drop every app not in ``apps`` (destroyed ones)."""
        for name in [n for n in self.last_request if n not in apps]:
            del self.last_request[name]
        if self.sleeping - apps:
            self.sleeping &= apps
            self.since = {name: at for name, at in self.since.items() if name in apps}
            self._save()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
