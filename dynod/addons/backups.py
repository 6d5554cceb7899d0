"""pg:backups: pg_dump custom-format files, verified after capture, kept under the state dir.

A backup is ``state_dir/backups/<add-on>/<id>.dump`` with its record ``<id>.json`` beside it. The
dump is written to a temporary name, fsynced and verified before it is renamed into place: the
verification reads the whole archive back through ``pg_restore`` (every table's data, not only
its table of contents), so a listed backup is a restorable one. A failure (a full disk, a server
that is down) leaves a record saying so and no partial dump; nothing else is touched.

Ids are Heroku's: ``b001`` for a capture, ``a001`` for a scheduled one, ``f001`` for the final
backup taken before an add-on is destroyed (kept ``[addons] final_backup_days``), numbered per
app. Restores run in one transaction (``--single-transaction``): a restore that fails leaves the
database as it was. Scheduled backups keep the plan's number (Heroku's retention by plan).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import trio

from ..errors import NotFound, UserError

PREFIXES = {"capture": "b", "scheduled": "a", "final": "f"}
_ID_RE = re.compile(r"^[abf][0-9]{3,9}$")
_AT_RE = re.compile(r"^\s*([01]?[0-9]|2[0-3]):([0-5][0-9])\s*([A-Za-z_/+-]+)?\s*$")


@dataclass
class Backup:
    id: str
    app: str
    addon: str
    kind: str  # capture | scheduled | final
    created_at: float
    status: str = "running"  # running | completed | failed
    finished_at: float | None = None
    size: int = 0
    error: str | None = None
    expires_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_schedule(text: str) -> tuple[int, int, str]:
    """Heroku's ``--at '02:00 America/New_York'`` (UTC if no zone): (hour, minute, zone)."""
    match = _AT_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise UserError(f"Invalid schedule {text!r}: use --at 'HH:MM ZONE', like '02:00 UTC' or "
                        "'02:00 America/New_York'.")
    hour, minute, zone = int(match.group(1)), int(match.group(2)), match.group(3) or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"Invalid schedule {text!r}: unknown time zone {zone!r} (use UTC or a name like "
                        "Europe/Paris).") from None
    return hour, minute, zone


def next_run(hour: int, minute: int, zone: str, after: float) -> float:
    """The first moment after ``after`` when it is hour:minute in ``zone``."""
    tz = ZoneInfo(zone)
    now = datetime.fromtimestamp(after, tz)
    candidate = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate.timestamp() <= after:
        candidate = (now + timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return candidate.timestamp()


def next_id(kind: str, existing: list[str]) -> str:
    prefix = PREFIXES[kind]
    numbers = [int(i[1:]) for i in existing if i.startswith(prefix) and i[1:].isdigit()]
    return f"{prefix}{max(numbers, default=0) + 1:03d}"


def check_id(backup_id: str) -> str:
    if not isinstance(backup_id, str) or not _ID_RE.match(backup_id):
        raise NotFound(f"Couldn't find that backup: {backup_id!r} (ids look like b001; see dynoctl pg:backups).")
    return backup_id


class BackupStore:
    def __init__(self, root: Path) -> None:
        self.root = root  # state_dir/backups

    def _dir(self, addon: str) -> Path:
        return self.root / addon

    def dump_path(self, backup: Backup) -> Path:
        return self._dir(backup.addon) / f"{backup.id}.dump"

    def save(self, backup: Backup) -> None:
        directory = self._dir(backup.addon)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = directory / f".{backup.id}.json.{secrets.token_hex(4)}"
        with open(tmp, "w") as f:
            json.dump(backup.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / f"{backup.id}.json")

    def all(self) -> list[Backup]:
        found = []
        if self.root.is_dir():
            for path in self.root.glob("*/*.json"):
                try:
                    found.append(Backup(**json.loads(path.read_text())))
                except (OSError, ValueError, TypeError):
                    continue  # a record being replaced, or not ours
        return sorted(found, key=lambda b: (b.created_at, b.id))

    def of_app(self, app: str) -> list[Backup]:
        return [b for b in self.all() if b.app == app]

    def get(self, app: str, backup_id: str) -> Backup:
        check_id(backup_id)
        for backup in self.of_app(app):
            if backup.id == backup_id:
                return backup
        raise NotFound(f"Couldn't find that backup: {backup_id} of {app} (see dynoctl pg:backups -a {app}).")

    def delete(self, backup: Backup) -> None:
        self.dump_path(backup).unlink(missing_ok=True)
        (self._dir(backup.addon) / f"{backup.id}.json").unlink(missing_ok=True)
        try:
            self._dir(backup.addon).rmdir()
        except OSError:
            pass  # other backups of the add-on remain

    async def read_chunks(self, backup: Backup, size: int = 1 << 16) -> AsyncIterator[bytes]:
        path = self.dump_path(backup)
        async with await trio.open_file(path, "rb") as f:
            while chunk := await f.read(size):
                yield chunk


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def now() -> float:
    return time.time()
