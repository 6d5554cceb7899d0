"""The metrics' own SQLite file (``state_dir/metrics.sqlite3``, 0600), apart from the ledger.

Two resolutions: one-minute points kept ``minute_retention`` seconds (24 h by default), and
``coarse_step`` points (10 min) kept ``coarse_retention`` (7 days). A finished minute is written
once, and merged into its coarse point in the same transaction, so the coarse series is exactly
the merge of its minutes (the histograms too: same percentile error). Events (deploys, config
changes, scaling, restarts) are kept as long as the coarse points, at most ``max_events`` per app.
The file is bounded: per app and process type at most 24 * 60 + 7 * 144 points of bounded size
(point.py), pruned every flush. Metrics are not worth a failing dynod: callers log and go on.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from .point import Point

MINUTE = 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    step INTEGER NOT NULL, app TEXT NOT NULL, type TEXT NOT NULL, start INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (app, type, step, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, app TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, type TEXT, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_app ON events (app, at);
"""


class MetricsStore:
    def __init__(self, path: Path, *, minute_retention: float = 86400, coarse_step: int = 600,
                 coarse_retention: float = 7 * 86400, max_events: int = 500) -> None:
        if coarse_step % MINUTE or coarse_step <= MINUTE:
            raise ValueError("coarse_step must be a multiple of 60 seconds, above 60")
        self.path = Path(path)
        self.minute_retention = minute_retention
        self.coarse_step = coarse_step
        self.coarse_retention = coarse_retention
        self.max_events = max_events
        # Made 0600 before SQLite opens it: figures and event texts are the apps' own business.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a host crash may lose the last minute; fine
        self._db.executescript(_SCHEMA)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def close(self) -> None:
        self._db.close()

    # -- writing ------------------------------------------------------------------------------

    def write_minute(self, app: str, type: str, start: int, point: Point) -> None:
        """A finished minute, and its share of the coarse point it falls in."""
        coarse_start = start - start % self.coarse_step
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?)",
                       (MINUTE, app, type, start, json.dumps(point.to_json(), separators=(",", ":"))))
            row = db.execute("SELECT data FROM points WHERE step = ? AND app = ? AND type = ? AND start = ?",
                             (self.coarse_step, app, type, coarse_start)).fetchone()
            coarse = Point.from_json(json.loads(row[0])) if row else Point()
            coarse.merge(point)
            db.execute("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?)",
                       (self.coarse_step, app, type, coarse_start,
                        json.dumps(coarse.to_json(), separators=(",", ":"))))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def add_event(self, app: str, at: float, kind: str, text: str, type: str | None = None) -> None:
        self._db.execute("INSERT INTO events (app, at, kind, type, text) VALUES (?, ?, ?, ?, ?)",
                         (app, at, kind, type, text[:500]))

    def prune(self, now: float) -> None:
        db = self._db
        db.execute("DELETE FROM points WHERE step = ? AND start < ?", (MINUTE, now - self.minute_retention))
        db.execute("DELETE FROM points WHERE step = ? AND start < ?",
                   (self.coarse_step, now - self.coarse_retention))
        db.execute("DELETE FROM events WHERE at < ?", (now - self.coarse_retention,))
        for (app,) in db.execute("SELECT app FROM events GROUP BY app HAVING count(*) > ?",
                                 (self.max_events,)).fetchall():
            db.execute("DELETE FROM events WHERE app = ? AND id NOT IN "
                       "(SELECT id FROM events WHERE app = ? ORDER BY at DESC, id DESC LIMIT ?)",
                       (app, app, self.max_events))

    def forget_app(self, app: str) -> None:
        self._db.execute("DELETE FROM points WHERE app = ?", (app,))
        self._db.execute("DELETE FROM events WHERE app = ?", (app,))

    # -- reading ------------------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """A connection of its own for a reader in a worker thread (WAL: it never blocks the writer)."""
        return sqlite3.connect(self.path, isolation_level=None)

    def points(self, app: str, type: str | None, step: int, since: float, *, db: sqlite3.Connection | None = None
               ) -> list[tuple[int, str, Point]]:
        """(start, type, point) from ``since`` on, oldest first; every type when ``type`` is None."""
        db = db or self._db
        if type is None:
            rows = db.execute("SELECT start, type, data FROM points WHERE app = ? AND step = ? AND start >= ? "
                                    "ORDER BY start", (app, step, since - step)).fetchall()
        else:
            rows = db.execute("SELECT start, type, data FROM points WHERE app = ? AND type = ? AND step = ? "
                                    "AND start >= ? ORDER BY start", (app, type, step, since - step)).fetchall()
        return [(start, kind, Point.from_json(json.loads(data))) for start, kind, data in rows]

    def types(self, app: str, *, db: sqlite3.Connection | None = None) -> list[str]:
        query = "SELECT DISTINCT type FROM points WHERE app = ? ORDER BY type"
        return [row[0] for row in (db or self._db).execute(query, (app,))]

    def events(self, app: str, since: float, *, db: sqlite3.Connection | None = None) -> list[dict[str, Any]]:
        query = "SELECT at, kind, type, text FROM events WHERE app = ? AND at >= ? ORDER BY at, id"
        rows = (db or self._db).execute(query, (app, since)).fetchall()
        return [{"at": at, "kind": kind, "type": type, "text": text} for at, kind, type, text in rows]

    def statistics(self) -> dict[str, int]:
        points = self._db.execute("SELECT count(*) FROM points").fetchone()[0]
        events = self._db.execute("SELECT count(*) FROM events").fetchone()[0]
        return {"points": points, "events": events, "bytes": self.path.stat().st_size}
