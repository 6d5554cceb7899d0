"""The scheduler's jobs and the slots they claimed, in state_dir/scheduler.sqlite3.

Its own small file, not the ledger: the ledger's schema is being versioned by others right now,
and a claim must be one durable write of its own before a dyno starts (WAL, synchronous=FULL).
It should move into the ledger (a jobs table and a slots table under a schema version) once that
settles, so that several hosts sharing a PostgreSQL ledger claim each slot once between them.
The file is 0600: commands can hold secrets. Runs are kept per job up to ``MAX_RUNS``.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MAX_RUNS = 50  # per job: the recent history `dynoctl scheduler` can show

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    cadence TEXT NOT NULL,
    command TEXT NOT NULL,
    size TEXT NOT NULL,
    catch_up INTEGER NOT NULL,
    created_at REAL NOT NULL,   -- on the schedule's clock
    last_slot REAL              -- the latest slot claimed (or skipped), on the schedule's clock
);
CREATE INDEX IF NOT EXISTS jobs_app ON jobs(app);
CREATE TABLE IF NOT EXISTS runs (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    slot REAL NOT NULL,
    claimed_at REAL NOT NULL,   -- wall time
    dyno TEXT,                  -- scheduler.N once started
    outcome TEXT NOT NULL,      -- claimed | started | skipped | failed: ...
    PRIMARY KEY (job_id, slot)
);
"""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    app: str
    cadence: str
    command: str
    size: str
    catch_up: bool
    created_at: float
    last_slot: float | None


@dataclass(frozen=True, slots=True)
class Run:
    job_id: str
    slot: float
    claimed_at: float
    dyno: str | None
    outcome: str


class SchedulerStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Made 0600 before sqlite writes a byte to it (and its -wal/-shm take the same mode).
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a claim is on disk before its dyno starts
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- jobs ------------------------------------------------------------------------------------

    def add_job(self, app: str, cadence: str, command: str, size: str, catch_up: bool, created_at: float) -> Job:
        job = Job(str(uuid.uuid4()), app, cadence, command, size, catch_up, created_at, None)
        self._db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                         (job.id, app, cadence, command, size, int(catch_up), created_at))
        return job

    def jobs(self, app: str | None = None) -> list[Job]:
        query = "SELECT * FROM jobs" + (" WHERE app = ?" if app is not None else "") + " ORDER BY created_at, id"
        return [_job(row) for row in self._db.execute(query, () if app is None else (app,))]

    def job(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def remove_job(self, job_id: str) -> bool:
        return self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1

    def remove_app(self, app: str) -> int:
        return self._db.execute("DELETE FROM jobs WHERE app = ?", (app,)).rowcount

    # -- slots -----------------------------------------------------------------------------------

    def claim(self, job_id: str, slot: float, *, outcome: str = "claimed") -> bool:
        """Record ``slot`` as taken, once: False if it (or a later one) was claimed already.

        One transaction moves ``last_slot`` forward and records the run; it is committed (and
        synced) before this returns, so a dynod killed right after cannot claim it again."""
        with _transaction(self._db):
            moved = self._db.execute(
                "UPDATE jobs SET last_slot = ? WHERE id = ? AND (last_slot IS NULL OR last_slot < ?)",
                (slot, job_id, slot)).rowcount
            if moved != 1:
                return False
            self._db.execute("INSERT INTO runs (job_id, slot, claimed_at, dyno, outcome) VALUES (?, ?, ?, NULL, ?)",
                             (job_id, slot, time.time(), outcome))
            self._db.execute(
                "DELETE FROM runs WHERE job_id = ? AND slot NOT IN "
                "(SELECT slot FROM runs WHERE job_id = ? ORDER BY slot DESC LIMIT ?)", (job_id, job_id, MAX_RUNS))
        return True

    def record_run(self, job_id: str, slot: float, *, dyno: str | None, outcome: str) -> None:
        self._db.execute("UPDATE runs SET dyno = ?, outcome = ? WHERE job_id = ? AND slot = ?",
                         (dyno, outcome, job_id, slot))

    def runs(self, job_id: str) -> list[Run]:
        rows = self._db.execute("SELECT job_id, slot, claimed_at, dyno, outcome FROM runs WHERE job_id = ? "
                                "ORDER BY slot", (job_id,))
        return [Run(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def unstarted(self) -> list[Run]:
        """Slots claimed whose dyno never started: dynod stopped in between (at most once, so not retried)."""
        rows = self._db.execute("SELECT job_id, slot, claimed_at, dyno, outcome FROM runs WHERE outcome = 'claimed'")
        return [Run(r[0], r[1], r[2], r[3], r[4]) for r in rows]


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _job(row: tuple) -> Job:  # type: ignore[type-arg]
    return Job(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7])
