"""Autoscaling policies, in state_dir/autoscale.sqlite3 (0600, WAL).

Its own small file for the reason the scheduler has one (docs/scheduler.md): the ledger's schema
is being versioned right now. A policy is settings of a formation, and belongs in the ledger's
formation table later (as Heroku's formation has its autoscaling settings).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    app TEXT NOT NULL,
    type TEXT NOT NULL,
    minimum INTEGER NOT NULL,
    maximum INTEGER NOT NULL,
    p95_goal_ms REAL NOT NULL,
    enabled_at REAL NOT NULL,
    last_change_at REAL,         -- the last scale (or refused scale) it made: the cool-down's start
    PRIMARY KEY (app, type)
);
"""


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    app: str
    type: str
    minimum: int
    maximum: int
    p95_goal_ms: float
    enabled_at: float
    last_change_at: float | None


class AutoscaleStore:
    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def put(self, policy: StoredPolicy) -> None:
        self._db.execute("INSERT OR REPLACE INTO policies VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (policy.app, policy.type, policy.minimum, policy.maximum, policy.p95_goal_ms,
                          policy.enabled_at, policy.last_change_at))

    def changed(self, app: str, type: str, at: float) -> None:
        self._db.execute("UPDATE policies SET last_change_at = ? WHERE app = ? AND type = ?", (at, app, type))

    def get(self, app: str, type: str) -> StoredPolicy | None:
        row = self._db.execute("SELECT * FROM policies WHERE app = ? AND type = ?", (app, type)).fetchone()
        return None if row is None else StoredPolicy(*row)

    def all(self, app: str | None = None) -> list[StoredPolicy]:
        query = "SELECT * FROM policies" + (" WHERE app = ?" if app is not None else "") + " ORDER BY app, type"
        return [StoredPolicy(*row) for row in self._db.execute(query, () if app is None else (app,))]

    def remove(self, app: str, type: str | None = None) -> int:
        if type is None:
            return self._db.execute("DELETE FROM policies WHERE app = ?", (app,)).rowcount
        return self._db.execute("DELETE FROM policies WHERE app = ? AND type = ?", (app, type)).rowcount
