"""The embedded ledger: one SQLite file in WAL mode, the ``Ledger`` Protocol over it.

Why SQLite: dynod is one host and one control-plane process, so an embedded database gives
transactions, crash safety and a schema that enforces rules, with nothing to run or configure.
WAL lets readers (``dynoctl releases`` while a deploy writes) proceed alongside one writer.

The rules the schema itself keeps (so raw SQL through any connection cannot break them):
- releases are append-only: a trigger refuses any UPDATE except ``status`` going from
  "pending" to "succeeded"/"failed", and any DELETE while the app still exists; destroying the
  app cascades to its releases, formation and dynos;
- a new release's version must be the app's max + 1 (so versions are gapless and
  ``INSERT OR REPLACE`` cannot swap a release out);
- config and process types are JSON objects; states, statuses and quantities are checked.

Every mutation runs in ``BEGIN IMMEDIATE``: the write lock is taken before the first read, so
"version = max + 1" is decided and written under the same lock and two connections can never
allocate the same version. A crash mid-transaction leaves the last committed state (SQLite's
journal); tests prove it by killing a forked process inside a transaction.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import Conflict, NotFound, UserError
from ..model import (
    DEFAULT_SIZE,
    PROCESS_TYPE_RE,
    App,
    DynoRecord,
    DynoState,
    Formation,
    Release,
    check_app_name,
    dyno_size,
)

RELEASE_STATUSES = ("pending", "succeeded", "failed")
ROUTING_POLICIES = ("random", "p2c")
# Heroku's default cap on dynos of one process type; a typo like web=1000 should not fork-bomb a host.
MAX_QUANTITY = 100
# RFC 1123 host names, lowercase, optionally one leading "*." label (Heroku accepts wildcards).
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME_RE = re.compile(rf"^(\*\.)?({_LABEL}\.)+{_LABEL}$")
# Heroku: eco and basic dynos run at most one per process type.
SINGLE_DYNO_SIZES = frozenset({"eco", "basic"})
RUN_NUMBER_RANGE = range(1000, 10000)  # Heroku's one-off names look like run.4821
# Heroku's feature names: "preboot", "runtime-dyno-metadata", "log-runtime-metrics", ...
FEATURE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

# Each entry moves the schema one version up; never edit a shipped entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE apps (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  REAL NOT NULL,
        maintenance INTEGER NOT NULL DEFAULT 0 CHECK (maintenance IN (0, 1))
    );

    CREATE TABLE releases (
        id            INTEGER PRIMARY KEY,
        app_id        INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        version       INTEGER NOT NULL CHECK (version >= 1),
        slug_id       TEXT,
        config        TEXT NOT NULL CHECK (json_valid(config) AND json_type(config) = 'object'),
        process_types TEXT NOT NULL
                      CHECK (json_valid(process_types) AND json_type(process_types) = 'object'),
        description   TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        created_at    REAL NOT NULL,
        UNIQUE (app_id, version)
    );

    -- Versions are gapless: v(N+1) only after vN. This also defeats INSERT OR REPLACE, whose
    -- replacement row would carry an existing version.
    CREATE TRIGGER releases_version_is_next BEFORE INSERT ON releases
    WHEN NEW.version != (SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = NEW.app_id)
    BEGIN
        SELECT RAISE(ABORT, 'releases are append-only: a new release must be the next version');
    END;

    CREATE TRIGGER releases_no_update BEFORE UPDATE ON releases
    WHEN NOT (
        OLD.status = 'pending' AND NEW.status IN ('succeeded', 'failed')
        AND NEW.id IS OLD.id AND NEW.app_id IS OLD.app_id AND NEW.version IS OLD.version
        AND NEW.slug_id IS OLD.slug_id AND NEW.config IS OLD.config
        AND NEW.process_types IS OLD.process_types AND NEW.description IS OLD.description
        AND NEW.created_at IS OLD.created_at
    )
    BEGIN
        SELECT RAISE(ABORT, 'releases are append-only: only a pending release''s status may change');
    END;

    -- While the app exists its history is kept; the app's own deletion cascades (by then the
    -- app row is gone, so this trigger lets the cascade through).
    CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases
    WHEN EXISTS (SELECT 1 FROM apps WHERE id = OLD.app_id)
    BEGIN
        SELECT RAISE(ABORT, 'releases are append-only: destroy the app to remove its releases');
    END;

    CREATE TABLE formation (
        app_id   INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        type     TEXT NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity >= 0),
        size     TEXT NOT NULL,
        PRIMARY KEY (app_id, type)
    );

    CREATE TABLE dynos (
        id               TEXT PRIMARY KEY,
        app_id           INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        name             TEXT NOT NULL,
        type             TEXT NOT NULL,
        release          INTEGER NOT NULL,
        size             TEXT NOT NULL,
        command          TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('starting', 'up', 'crashed', 'down')),
        pid              INTEGER,
        ip               TEXT,
        port             INTEGER NOT NULL,
        created_at       REAL NOT NULL,
        state_changed_at REAL NOT NULL,
        attached         INTEGER NOT NULL DEFAULT 0 CHECK (attached IN (0, 1)),
        exit_status      INTEGER
    );
    CREATE INDEX dynos_by_app ON dynos (app_id, name);
    """,
    # v2: custom domains (a hostname routes to one app on the host) and TLS certificates.
    """
    CREATE TABLE domains (
        hostname   TEXT PRIMARY KEY,
        app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        created_at REAL NOT NULL
    );

    -- Keyed by domain, not by a domains row: the app's default hostname may carry a cert too.
    CREATE TABLE certs (
        app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        domain     TEXT NOT NULL,
        cert_pem   TEXT NOT NULL,
        key_pem    TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (app_id, domain)
    );
    """,
    # v3: how the router picks a web dyno for the app: Heroku's random, or power of two choices.
    """
    ALTER TABLE apps ADD COLUMN routing_policy TEXT NOT NULL DEFAULT 'random'
        CHECK (routing_policy IN ('random', 'p2c'));
    """,
    # v4: each app's own uid (its dynos run as uid=gid=N, as Heroku runs each dyno as its own
    # user), released with the app; and the app's enabled features (Heroku's "preboot", ...).
    """
    CREATE TABLE app_uids (
        app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
        uid    INTEGER NOT NULL UNIQUE CHECK (uid > 0)
    );

    CREATE TABLE app_features (
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        name   TEXT NOT NULL,
        PRIMARY KEY (app_id, name)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteLedger:
    """The default ``Ledger``. Safe to share between threads (one connection behind a lock)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: the driver issues no hidden BEGINs; every transaction here is
            # explicit, so what is atomic is visible in the code.
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise UserError(f"Cannot open the ledger at {self.path}: {exc}; check the path and its "
                            "permissions.", status=500, code="internal") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
                # NORMAL in WAL keeps every commit atomic and the file consistent after a crash;
                # only the last commits before a power cut may be lost, never half of one.
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            # Without this, INSERT OR REPLACE deletes rows without firing delete triggers.
            self._db.execute("PRAGMA recursive_triggers = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise UserError(f"The ledger at {self.path} is not a usable SQLite database ({exc}); "
                            "move it aside or restore a backup.", status=500, code="internal") from None
        except BaseException:
            self._db.close()
            raise

    # ---- plumbing -------------------------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection, for diagnostics and for tests proving the schema's own rules."""
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One mutation = one IMMEDIATE transaction: committed whole or not at all."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _busy(exc) from None
            try:
                yield self._db
            except BaseException:
                self._rollback()
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                raise _busy(exc) from None

    def _rollback(self) -> None:
        # Some errors (SQLITE_FULL, an interrupted statement) already rolled the transaction back.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # A deferred transaction gives a multi-statement read one consistent snapshot.
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            current = row["version"] if row else 0
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (0)")
            if current > SCHEMA_VERSION:
                raise UserError(
                    f"The ledger at {self.path} has schema v{current}, newer than this dynod knows "
                    f"(v{SCHEMA_VERSION}); upgrade dynod.", status=500, code="internal")
            for script in MIGRATIONS[current:]:
                # executescript would COMMIT our transaction; run statement by statement instead.
                for statement in _statements(script):
                    db.execute(statement)
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT version FROM schema_version").fetchone()["version"])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- apps -----------------------------------------------------------------------------

    def create_app(self, name: str) -> App:
        check_app_name(name)
        with self._write() as db:
            if db.execute("SELECT 1 FROM apps WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"Name {name} is already taken; choose another app name.")
            now = self._clock()
            cursor = db.execute("INSERT INTO apps (name, created_at) VALUES (?, ?)", (name, now))
            return App(id=int(cursor.lastrowid or 0), name=name, created_at=now)

    def get_app(self, name: str) -> App:
        with self._read() as db:
            return _app(_app_row(db, name))

    def list_apps(self) -> list[App]:
        with self._read() as db:
            return [_app(row) for row in db.execute("SELECT * FROM apps ORDER BY name")]

    def destroy_app(self, name: str) -> None:
        with self._write() as db:
            app_id = _app_row(db, name)["id"]
            db.execute("DELETE FROM apps WHERE id = ?", (app_id,))

    def set_maintenance(self, name: str, on: bool) -> App:
        with self._write() as db:
            app_id = _app_row(db, name)["id"]
            db.execute("UPDATE apps SET maintenance = ? WHERE id = ?", (int(bool(on)), app_id))
            return _app(_app_row(db, name))

    def set_routing_policy(self, name: str, policy: str) -> App:
        if policy not in ROUTING_POLICIES:
            raise UserError(f"Unknown routing policy {policy!r}: use random (Heroku's) or p2c "
                            "(power of two choices: the less busy of two random dynos).")
        with self._write() as db:
            app_id = _app_row(db, name)["id"]
            db.execute("UPDATE apps SET routing_policy = ? WHERE id = ?", (policy, app_id))
            return _app(_app_row(db, name))

    # ---- releases -------------------------------------------------------------------------

    def create_release(
        self,
        app: str,
        *,
        slug_id: str | None,
        config: dict[str, str],
        process_types: dict[str, str],
        description: str,
        status: str = "succeeded",
    ) -> Release:
        _check_status(status)
        _check_str_map(config, "config var")
        _check_str_map(process_types, "process type")
        for type_name in process_types:
            _check_process_type(type_name)
        with self._write() as db:
            app_id = _app_row(db, app)["id"]
            version = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = ?",
                                 (app_id,)).fetchone()[0]
            db.execute(
                "INSERT INTO releases (app_id, version, slug_id, config, process_types, description,"
                " status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (app_id, version, slug_id, _dump(config), _dump(process_types), description, status,
                 self._clock()),
            )
            if status == "succeeded":
                self._default_web_formation(db, app_id, process_types)
            return _release(app, _release_row(db, app_id, app, version))

    def get_release(self, app: str, version: int) -> Release:
        with self._read() as db:
            app_id = _app_row(db, app)["id"]
            return _release(app, _release_row(db, app_id, app, version))

    def list_releases(self, app: str) -> list[Release]:
        with self._read() as db:
            app_id = _app_row(db, app)["id"]
            rows = db.execute("SELECT * FROM releases WHERE app_id = ? ORDER BY version", (app_id,))
            return [_release(app, row) for row in rows]

    def current_release(self, app: str) -> Release | None:
        with self._read() as db:
            app_id = _app_row(db, app)["id"]
            row = _current_release_row(db, app_id)
            return _release(app, row) if row else None

    def set_release_status(self, app: str, version: int, status: str) -> Release:
        _check_status(status)
        with self._write() as db:
            app_id = _app_row(db, app)["id"]
            row = _release_row(db, app_id, app, version)
            if row["status"] == status:
                return _release(app, row)
            if row["status"] != "pending":
                raise UserError(f"Release v{version} of {app} is already {row['status']}; only a "
                                "pending release can change status. Create a new release instead.")
            db.execute("UPDATE releases SET status = ? WHERE id = ?", (status, row["id"]))
            if status == "succeeded":
                self._default_web_formation(db, app_id, json.loads(row["process_types"]))
            return _release(app, _release_row(db, app_id, app, version))

    def _default_web_formation(self, db: sqlite3.Connection, app_id: int,
                               process_types: dict[str, str]) -> None:
        # Heroku scales web to 1 on the first deploy that has a web type; afterwards the row
        # exists and the user's choice (even web=0) stands.
        if "web" in process_types:
            db.execute("INSERT OR IGNORE INTO formation (app_id, type, quantity, size)"
                       " VALUES (?, 'web', 1, ?)", (app_id, DEFAULT_SIZE))

    # ---- formation ------------------------------------------------------------------------

    def get_formation(self, app: str) -> list[Formation]:
        with self._read() as db:
            app_id = _app_row(db, app)["id"]
            return _formation(db, app_id, app)

    def set_formation(self, app: str, type: str, *, quantity: int | None = None, size: str | None = None
                      ) -> Formation:
        if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int)
                                     or not 0 <= quantity <= MAX_QUANTITY):
            raise UserError(f"Invalid quantity {quantity!r} for {type}: use a whole number from 0 to "
                            f"{MAX_QUANTITY}.")
        canonical_size = dyno_size(size).name if size is not None else None
        with self._write() as db:
            app_id = _app_row(db, app)["id"]
            rows = {f.type: f for f in _formation(db, app_id, app)}
            if type not in rows:
                raise NotFound(f"Couldn't find that process type ({type}); the current release of "
                               f"{app} defines: {', '.join(sorted(rows)) or 'none (deploy first)'}.")
            new = Formation(app=app, type=type,
                            quantity=rows[type].quantity if quantity is None else quantity,
                            size=canonical_size or rows[type].size)
            if new.size.lower() in SINGLE_DYNO_SIZES and new.quantity > 1:
                raise UserError(f"Cannot run more than 1 {new.size} dyno per process type; "
                                "choose a standard or performance size to scale out.")
            db.execute("INSERT INTO formation (app_id, type, quantity, size) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (app_id, type) DO UPDATE SET quantity = excluded.quantity, "
                       "size = excluded.size", (app_id, type, new.quantity, new.size))
            return new

    # ---- dynos ----------------------------------------------------------------------------

    def put_dyno(self, dyno: DynoRecord) -> None:
        state = DynoState(dyno.state)
        with self._write() as db:
            app_id = _app_row(db, dyno.app)["id"]
            db.execute(
                "INSERT OR REPLACE INTO dynos (id, app_id, name, type, release, size, command, state, pid,"
                " ip, port, created_at, state_changed_at, attached, exit_status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (dyno.id, app_id, dyno.name, dyno.type, dyno.release, dyno.size, dyno.command,
                 state.value, dyno.pid, dyno.ip, dyno.port, dyno.created_at, dyno.state_changed_at,
                 int(dyno.attached), dyno.exit_status),
            )

    def set_dyno_state(self, dyno_id: str, state: DynoState, *, pid: int | None = None,
                       exit_status: int | None = None) -> None:
        """Move a dyno to ``state``; ``pid``/``exit_status`` are recorded when given, else kept."""
        state = DynoState(state)
        with self._write() as db:
            cursor = db.execute(
                "UPDATE dynos SET state = ?, state_changed_at = ?, pid = COALESCE(?, pid),"
                " exit_status = COALESCE(?, exit_status) WHERE id = ?",
                (state.value, self._clock(), pid, exit_status, dyno_id))
            if cursor.rowcount == 0:
                raise NotFound(f"Couldn't find that dyno: {dyno_id}.")

    def list_dynos(self, app: str | None = None) -> list[DynoRecord]:
        with self._read() as db:
            query = "SELECT dynos.*, apps.name AS app_name FROM dynos JOIN apps ON apps.id = dynos.app_id"
            if app is None:
                rows = db.execute(query).fetchall()
            else:
                app_id = _app_row(db, app)["id"]
                rows = db.execute(query + " WHERE dynos.app_id = ?", (app_id,)).fetchall()
        dynos = [_dyno(row) for row in rows]
        dynos.sort(key=lambda d: (d.app, d.type, _name_index(d.name), d.created_at, d.id))
        return dynos

    def delete_dyno(self, dyno_id: str) -> None:
        """Forget a dyno. Idempotent: a dyno's record can go with its app (cascade) before the
        manager's own cleanup runs, and that is not an error."""
        with self._write() as db:
            db.execute("DELETE FROM dynos WHERE id = ?", (dyno_id,))

    def next_run_number(self, app: str) -> int:
        """A random 4-digit N with no dyno of ``app`` named run.N (not reserved: use it at once)."""
        with self._read() as db:
            app_id = _app_row(db, app)["id"]
            used = {row["name"] for row in db.execute(
                "SELECT name FROM dynos WHERE app_id = ? AND name LIKE 'run.%'", (app_id,))}
        # Random picks first (Heroku-like names); a linear fallback only when nearly all are taken.
        for _ in range(32):
            number = self._rng.choice(RUN_NUMBER_RANGE)
            if f"run.{number}" not in used:
                return number
        for number in RUN_NUMBER_RANGE:
            if f"run.{number}" not in used:
                return number
        raise UserError(f"{app} already runs {len(RUN_NUMBER_RANGE)} one-off dynos; stop some first.",
                        status=429, code="rate_limit")


    # ---- the app's uid and features -------------------------------------------------------

    def app_uid(self, app: str, first: int, count: int) -> int:
        """The app's own uid: the lowest in [first, first+count) no other app holds, assigned on
        the first call and kept until the app is destroyed."""
        _check_uid_range(first, count)
        with self._write() as db:
            app_id = _app_row(db, app)["id"]
            row = db.execute("SELECT uid FROM app_uids WHERE app_id = ?", (app_id,)).fetchone()
            if row is not None:
                return int(row["uid"])
            taken = [r["uid"] for r in db.execute(
                "SELECT uid FROM app_uids WHERE uid >= ? AND uid < ? ORDER BY uid", (first, first + count))]
            uid = _lowest_free(first, count, taken)
            db.execute("INSERT INTO app_uids (app_id, uid) VALUES (?, ?)", (app_id, uid))
            return uid

    def list_features(self, app: str) -> set[str]:
        with self._read() as db:
            app_id = _app_row(db, app)["id"]
            return {row["name"] for row in db.execute(
                "SELECT name FROM app_features WHERE app_id = ?", (app_id,))}

    def set_feature(self, app: str, name: str, enabled: bool) -> None:
        _check_feature_name(name)
        with self._write() as db:
            app_id = _app_row(db, app)["id"]
            if enabled:
                db.execute("INSERT INTO app_features (app_id, name) VALUES (?, ?)"
                           " ON CONFLICT (app_id, name) DO NOTHING", (app_id, name))
            else:
                db.execute("DELETE FROM app_features WHERE app_id = ? AND name = ?", (app_id, name))

    # ---- domains and certificates (beyond the Protocol: the platform's routing needs them) --

    def list_domains(self, app: str) -> list[str]:
        """The app's custom hostnames, sorted (its default hostname is the platform's to add)."""
        with self._read() as db:
            app_id = _app_row(db, app)["id"]
            return [row["hostname"] for row in db.execute(
                "SELECT hostname FROM domains WHERE app_id = ? ORDER BY hostname", (app_id,))]

    def add_domain(self, app: str, hostname: str) -> None:
        if not HOSTNAME_RE.match(hostname) or len(hostname) > 253:
            raise UserError(f"Invalid domain {hostname!r}: use a lowercase host name like www.example.com "
                            "(a leading '*.' for a wildcard).")
        with self._write() as db:
            app_id = _app_row(db, app)["id"]
            owner = db.execute("SELECT app_id FROM domains WHERE hostname = ?", (hostname,)).fetchone()
            if owner is not None:
                where = "this app" if owner["app_id"] == app_id else "another app"
                raise Conflict(f"Domain {hostname} is already in use by {where}; remove it there first.")
            db.execute("INSERT INTO domains (hostname, app_id, created_at) VALUES (?, ?, ?)",
                       (hostname, app_id, self._clock()))

    def remove_domain(self, app: str, hostname: str) -> None:
        """Remove a custom domain and any certificate for it."""
        with self._write() as db:
            app_id = _app_row(db, app)["id"]
            if db.execute("DELETE FROM domains WHERE hostname = ? AND app_id = ?",
                          (hostname, app_id)).rowcount == 0:
                raise NotFound(f"Couldn't find that domain: {hostname} on {app}.")
            db.execute("DELETE FROM certs WHERE app_id = ? AND domain = ?", (app_id, hostname))

    def list_certs(self, app: str) -> list[tuple[str, str, str]]:
        """(domain, certificate PEM, private key PEM) for each certificate of the app."""
        with self._read() as db:
            app_id = _app_row(db, app)["id"]
            return [(row["domain"], row["cert_pem"], row["key_pem"]) for row in db.execute(
                "SELECT * FROM certs WHERE app_id = ? ORDER BY domain", (app_id,))]

    def add_cert(self, app: str, domain: str, cert_pem: str, key_pem: str) -> None:
        """Store (or renew: replace) the certificate for one of the app's domains. The caller
        checks that the PEMs parse and match; the ledger only keeps them."""
        with self._write() as db:
            app_id = _app_row(db, app)["id"]
            db.execute("INSERT INTO certs (app_id, domain, cert_pem, key_pem, created_at)"
                       " VALUES (?, ?, ?, ?, ?) ON CONFLICT (app_id, domain)"
                       " DO UPDATE SET cert_pem = excluded.cert_pem, key_pem = excluded.key_pem,"
                       " created_at = excluded.created_at",
                       (app_id, domain, cert_pem, key_pem, self._clock()))


# ---- row <-> model ------------------------------------------------------------------------

def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (trigger bodies contain ';', so let SQLite judge)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete statement in migration: {buffer.strip()[:60]!r}")


def _busy(exc: sqlite3.OperationalError) -> UserError:
    return UserError(f"The ledger is busy ({exc}); retry in a moment.", status=503, code="unavailable")


def _dump(mapping: dict[str, str]) -> str:
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"))


def _check_status(status: str) -> None:
    if status not in RELEASE_STATUSES:
        raise UserError(f"Invalid release status {status!r}: use one of {', '.join(RELEASE_STATUSES)}.")


def _check_str_map(mapping: dict[str, str], what: str) -> None:
    if not isinstance(mapping, dict):
        raise UserError(f"The {what}s must be a mapping of names to strings.")
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UserError(f"Invalid {what} {key!r}: names and values must be strings.")


def _check_uid_range(first: int, count: int) -> None:
    if isinstance(first, bool) or isinstance(count, bool) or not isinstance(first, int) \
            or not isinstance(count, int) or first < 1 or count < 1:
        raise UserError(f"Invalid uid range first={first!r} count={count!r}: set [dynos] uid_first "
                        "and uid_count to positive whole numbers.", status=500, code="internal")


def _lowest_free(first: int, count: int, taken: list[int]) -> int:
    """The lowest number in [first, first+count) not in ``taken`` (sorted ascending)."""
    candidate = first
    for uid in taken:
        if uid != candidate:
            break
        candidate += 1
    if candidate >= first + count:
        raise UserError(f"no free uid in [{first}, {first + count}): raise [dynos] uid_count "
                        f"(every uid is held by an app).", status=503, code="no_free_uid")
    return candidate


def _check_feature_name(name: str) -> None:
    if not isinstance(name, str) or not FEATURE_RE.match(name):
        raise UserError(f"Invalid feature name {name!r}: use lowercase letters, digits and '-' "
                        "(like preboot).")


def _check_process_type(name: str) -> None:
    if not PROCESS_TYPE_RE.match(name):
        raise UserError(f"Invalid process type {name!r}: use letters, digits, '_' or '-'.")


def _app_row(db: sqlite3.Connection, name: str) -> sqlite3.Row:
    row = db.execute("SELECT * FROM apps WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"Couldn't find that app: {name}.")
    return row


def _release_row(db: sqlite3.Connection, app_id: int, app: str, version: int) -> sqlite3.Row:
    row = db.execute("SELECT * FROM releases WHERE app_id = ? AND version = ?", (app_id, version)).fetchone()
    if row is None:
        raise NotFound(f"Couldn't find that release: v{version} of {app}.")
    return row


def _current_release_row(db: sqlite3.Connection, app_id: int) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM releases WHERE app_id = ? AND status = 'succeeded' ORDER BY version DESC LIMIT 1",
        (app_id,)).fetchone()
    return row


def _formation(db: sqlite3.Connection, app_id: int, app: str) -> list[Formation]:
    stored = {row["type"]: Formation(app=app, type=row["type"], quantity=row["quantity"], size=row["size"])
              for row in db.execute("SELECT * FROM formation WHERE app_id = ?", (app_id,))}
    current = _current_release_row(db, app_id)
    declared = json.loads(current["process_types"]) if current else {}
    for type_name in declared:
        stored.setdefault(type_name, Formation(app=app, type=type_name, quantity=0))
    return [stored[name] for name in sorted(stored)]


def _app(row: sqlite3.Row) -> App:
    return App(id=row["id"], name=row["name"], created_at=row["created_at"],
               maintenance=bool(row["maintenance"]), routing_policy=row["routing_policy"])


def _release(app: str, row: sqlite3.Row) -> Release:
    return Release(app=app, version=row["version"], slug_id=row["slug_id"], config=json.loads(row["config"]),
                   description=row["description"], created_at=row["created_at"],
                   process_types=json.loads(row["process_types"]), status=row["status"])


def _dyno(row: sqlite3.Row) -> DynoRecord:
    return DynoRecord(
        id=row["id"], app=row["app_name"], name=row["name"], type=row["type"], release=row["release"],
        size=row["size"], command=row["command"], state=DynoState(row["state"]), pid=row["pid"],
        ip=row["ip"], port=row["port"], created_at=row["created_at"],
        state_changed_at=row["state_changed_at"], attached=bool(row["attached"]),
        exit_status=row["exit_status"])


def _name_index(name: str) -> int:
    _, _, index = name.rpartition(".")
    return int(index) if index.isdigit() else -1
