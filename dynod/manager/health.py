"""The optional per-app HTTP health check of web dynos: its settings, where they live, and its verdicts.

Heroku routes to a web dyno once its $PORT accepts a connection, and keeps routing to it for as
long as it runs, answering or not: a dyno that hangs (a deadlock, a SIGSTOP) costs every request
sent to it an H12 after 30 s. With a health check, a booting web dyno joins the routes only once
``GET path`` answers ``status`` within ``timeout``, and a dyno that fails it ``failures`` times in
a row (one probe every ``interval`` seconds) leaves the routes at once and is replaced.

The settings are one small JSON file per app, ``state_dir/health-checks/<app>.json``: no ledger
schema change, and gone with the app. The decisions here are pure; the probing is the manager's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import NotFound, UserError

# name -> (default, lowest, highest): out of range is refused, never clamped.
LIMITS: dict[str, tuple[float, float, float]] = {
    "status": (200, 100, 599),
    "timeout": (2.0, 0.1, 30.0),
    "interval": (5.0, 0.5, 300.0),
    "failures": (3, 1, 10),
}
_PATH = re.compile(r"^/[!-~]{0,1023}$")  # printable ASCII, no spaces: it goes into a request line


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/"
    status: int = 200
    timeout: float = 2.0
    interval: float = 5.0
    failures: int = 3

    @classmethod
    def from_json(cls, body: Any) -> HealthCheck:
        """Checked settings from an API body; UserError names the first field that is wrong."""
        if not isinstance(body, dict):
            raise UserError("A health check is an object: {\"path\": \"/health\", \"status\": 200, ...}.")
        unknown = sorted(set(body) - {"path", *LIMITS})
        if unknown:
            raise UserError(f"Unknown health check field {unknown[0]!r}: use path, status, timeout, interval, "
                            "failures.")
        path = body.get("path", "/")
        if not isinstance(path, str) or not _PATH.match(path):
            raise UserError(f"Health check path {path!r} must start with / and have no spaces (like /health).")
        values: dict[str, Any] = {}
        for name, (default, low, high) in LIMITS.items():
            value = body.get(name, default)
            whole = name in ("status", "failures")
            if isinstance(value, bool) or not isinstance(value, int | float) or (whole and value != int(value)):
                raise UserError(f"Health check {name} must be a {'whole ' if whole else ''}number from "
                                f"{low:g} to {high:g}.")
            if not low <= value <= high:
                raise UserError(f"Health check {name} {value:g} is out of range: use {low:g} to {high:g}.")
            values[name] = int(value) if whole else float(value)
        check = cls(path=path, **values)
        if check.timeout > check.interval:
            raise UserError(f"Health check timeout {check.timeout:g} s is longer than its interval "
                            f"{check.interval:g} s: probes would overlap; lower the timeout.")
        return check

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def request(self, host: str) -> bytes:
        return (f"GET {self.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dynod-health-check\r\n"
                "Connection: close\r\n\r\n").encode()


def passed(check: HealthCheck, status_line: bytes | None) -> bool:
    """Whether one probe's answer (its first line, None for no answer in time) passes the check."""
    if not status_line:
        return False
    parts = status_line.split(None, 2)
    return (len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit()
            and int(parts[1]) == check.status)


def should_eject(check: HealthCheck, failures_in_a_row: int) -> bool:
    """A routed dyno leaves the routes once it failed ``failures`` probes in a row."""
    return failures_in_a_row >= check.failures


class HealthChecks:
    """The per-app files, read on every change and kept in memory (the manager asks per probe)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, HealthCheck | None] = {}

    def _path(self, app: str) -> Path:
        if "/" in app or app.startswith("."):
            raise NotFound(f"Couldn't find that app ({app!r}).")
        return self.directory / f"{app}.json"

    def get(self, app: str) -> HealthCheck | None:
        if app not in self._cache:
            path = self._path(app)
            try:
                data = json.loads(path.read_text())
                self._cache[app] = HealthCheck.from_json(data)
            except FileNotFoundError:
                self._cache[app] = None
            except (ValueError, UserError):
                self._cache[app] = None  # a hand-edited file gone wrong: no check rather than a crash
        return self._cache[app]

    def set(self, app: str, check: HealthCheck) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(app)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(check.to_json()))
        os.replace(tmp, path)  # whole or not at all
        self._cache[app] = check

    def remove(self, app: str) -> None:
        try:
            self._path(app).unlink()
        except FileNotFoundError:
            pass
        self._cache[app] = None
