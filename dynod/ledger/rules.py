"""The ledger's rules, written once above the storage.

Every backend (``SqliteLedger``, ``PostgresLedger``) is a ``LedgerRules`` that supplies only what
differs between databases: a connection, what a transaction is, how writers are kept apart, the
schema (with the triggers that make the database itself refuse a rewrite of history) and how a
driver's errors become a user's sentence. What the ledger *means* lives here:

- an app name is checked and taken once; each app gets its own uid from a range, released with it;
- releases are v1, v2, ... per app, decided as max + 1 inside the write transaction (so concurrent
  writers get distinct, consecutive versions); only a pending release's status may move;
- the current release is the newest succeeded one; a rollback is a new release (the platform
  copies the old slug and config forward), never an edit;
- formation follows the current release's process types, and the first deploy with ``web``
  scales web to 1 (Heroku's rule), once;
- every mutation is one transaction; every refusal is a ``UserError`` sentence.

The SQL here is the common subset of SQLite 3.35+ and PostgreSQL: ``?`` placeholders (a backend
may rewrite them), ``INSERT ... ON CONFLICT ... DO NOTHING / DO UPDATE``, ``RETURNING``. The pure
checks are plain functions so that they test without any database.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..errors import Conflict, NotFound, UserError
from ..model import (
    DEFAULT_SIZE,
    PROCESS_TYPE_RE,
    RESERVED_CONFIG_VARS,
    Addon,
    AddonAttachment,
    AddonRef,
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
# A buildpack is a URL or a registry name (heroku/python): printable, no spaces, bounded; and an
# app's list is bounded, so one call cannot store an unbounded number of rows.
MAX_BUILDPACK_LENGTH = 1024
BUILDPACK_RE = re.compile(rf"^[\x21-\x7e]{{1,{MAX_BUILDPACK_LENGTH}}}$")
MAX_BUILDPACKS = 32
# Heroku's feature names: "preboot", "runtime-dyno-metadata", "log-runtime-metrics", ...
FEATURE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Heroku's attachment names: they prefix config vars, so uppercase, digits and '_', from a letter.
ATTACHMENT_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")
# Heroku's add-on names: lowercase letters, digits and dashes, starting with a letter.
ADDON_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,254}$")


class Row(Protocol):
    def __getitem__(self, key: str) -> Any: ...


class Tx(Protocol):
    """One open transaction: what the rules need from a backend's connection."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...


# ---- pure checks (no database) ----------------------------------------------------------------

def check_status(status: str) -> None:
    if status not in RELEASE_STATUSES:
        raise UserError(f"Invalid release status {status!r}: use one of {', '.join(RELEASE_STATUSES)}.")


def check_str_map(mapping: Any, what: str) -> None:
    if not isinstance(mapping, dict):
        raise UserError(f"The {what}s must be a mapping of names to strings.")
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UserError(f"Invalid {what} {key!r}: names and values must be strings.")


def check_process_type(name: str) -> None:
    if not PROCESS_TYPE_RE.match(name):
        raise UserError(f"Invalid process type {name!r}: use letters, digits, '_' or '-'.")


def check_routing_policy(policy: str) -> None:
    if policy not in ROUTING_POLICIES:
        raise UserError(f"Unknown routing policy {policy!r}: use random (Heroku's) or p2c "
                        "(power of two choices: the less busy of two random dynos).")


def check_quantity(type: str, quantity: int | None) -> None:
    if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int)
                                 or not 0 <= quantity <= MAX_QUANTITY):
        raise UserError(f"Invalid quantity {quantity!r} for {type}: use a whole number from 0 to "
                        f"{MAX_QUANTITY}.")


def check_dyno_count(formation: Formation) -> None:
    if formation.size.lower() in SINGLE_DYNO_SIZES and formation.quantity > 1:
        raise UserError(f"Cannot run more than 1 {formation.size} dyno per process type; "
                        "choose a standard or performance size to scale out.")


def check_hostname(hostname: str) -> None:
    if not isinstance(hostname, str) or not HOSTNAME_RE.match(hostname) or len(hostname) > 253:
        raise UserError(f"Invalid domain {hostname!r}: use a lowercase host name like www.example.com "
                        "(a leading '*.' for a wildcard).")


def check_uid_range(first: int, count: int) -> None:
    if isinstance(first, bool) or isinstance(count, bool) or not isinstance(first, int) \
            or not isinstance(count, int) or first < 1 or count < 1:
        raise UserError(f"Invalid uid range first={first!r} count={count!r}: set [dynos] uid_first "
                        "and uid_count to positive whole numbers.", status=500, code="internal")


def lowest_free_uid(first: int, count: int, taken: Iterable[int]) -> int:
    """The lowest number in [first, first+count) not in ``taken`` (ascending, inside the range)."""
    candidate = first
    for uid in taken:
        if uid != candidate:
            break
        candidate += 1
    if candidate >= first + count:
        raise UserError(f"no free uid in [{first}, {first + count}): raise [dynos] uid_count "
                        f"(every uid is held by an app).", status=503, code="no_free_uid")
    return candidate


def check_feature_name(name: str) -> None:
    if not isinstance(name, str) or not FEATURE_RE.match(name):
        raise UserError(f"Invalid feature name {name!r}: use lowercase letters, digits and '-' "
                        "(like preboot).")


def check_buildpacks(urls: Any) -> list[str]:
    """The app's buildpack list as given, checked: URLs or names (heroku/python), in order, each
    once. Which of them a build can use is the builder's business, not the ledger's."""
    if isinstance(urls, str) or not isinstance(urls, (list, tuple)):
        raise UserError(f"Buildpacks must be a list of URLs or names, not {type(urls).__name__}.")
    if len(urls) > MAX_BUILDPACKS:
        raise UserError(f"Too many buildpacks ({len(urls)}): an app may have at most {MAX_BUILDPACKS}.")
    seen: set[str] = set()
    for url in urls:
        if not isinstance(url, str) or not BUILDPACK_RE.fullmatch(url):
            raise UserError(f"Invalid buildpack {url!r}: give a URL or a name like heroku/python "
                            f"(no spaces or control characters, at most {MAX_BUILDPACK_LENGTH} characters).")
        if url in seen:
            raise UserError(f"Buildpack {url} is given twice; list each buildpack once.")
        seen.add(url)
    return list(urls)


def check_attachment_name(name: str) -> None:
    if not isinstance(name, str) or not ATTACHMENT_NAME_RE.match(name):
        raise UserError(f"Invalid attachment name {name!r}: use uppercase letters, digits and '_', "
                        "starting with a letter (like DATABASE or ANALYTICS_DB).")


def check_addon_name(name: str) -> None:
    if not isinstance(name, str) or not ADDON_NAME_RE.match(name):
        raise UserError(f"Invalid add-on name {name!r}: use lowercase letters, digits and dashes, "
                        "starting with a letter.")


def attachment_vars(attachment: str, config: Mapping[str, str]) -> dict[str, str]:
    """The config vars an attachment sets: the add-on's vars under the attachment's prefix."""
    return {f"{attachment}_{key}": value for key, value in config.items()}


def check_vars_free(app: str, attachment: str, wanted: Iterable[str], config: Mapping[str, str]) -> None:
    """An attachment may not take over a config var the app already has (its own or another
    attachment's), nor one the platform sets itself."""
    for var in sorted(wanted):
        if var in RESERVED_CONFIG_VARS:
            raise UserError(f"Attachment name {attachment} would set {var}, which the platform sets "
                            "itself; choose another name with --as.")
        if var in config:
            raise Conflict(f"{app} already has the config var {var}; choose another attachment name "
                           f"with --as, or unset {var} first.")


def pick_run_number(app: str, used_names: set[str], rng: random.Random) -> int:
    """A random 4-digit N with run.N not in use (Heroku-like names); a scan when nearly full."""
    for _ in range(32):
        number = rng.choice(RUN_NUMBER_RANGE)
        if f"run.{number}" not in used_names:
            return number
    for number in RUN_NUMBER_RANGE:
        if f"run.{number}" not in used_names:
            return number
    raise UserError(f"{app} already runs {len(RUN_NUMBER_RANGE)} one-off dynos; stop some first.",
                    status=429, code="rate_limit")


def formation_of(app: str, stored: Iterable[Formation], declared: Iterable[str]) -> list[Formation]:
    """One row per type the current release declares (quantity 0 unless stored), plus every
    stored row (a type gone from the Procfile still shows, so it can be scaled to 0), by type."""
    rows = {f.type: f for f in stored}
    for type_name in declared:
        rows.setdefault(type_name, Formation(app=app, type=type_name, quantity=0))
    return [rows[name] for name in sorted(rows)]


def dyno_sort_key(dyno: DynoRecord) -> tuple[str, str, int, float, str]:
    _, _, index = dyno.name.rpartition(".")
    return (dyno.app, dyno.type, int(index) if index.isdigit() else -1, dyno.created_at, dyno.id)


def dump_json(mapping: Mapping[str, str]) -> str:
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"))


# ---- the rules over a transaction ----------------------------------------------------------

class LedgerRules:
    """The ``Ledger`` Protocol, once. Subclasses provide ``_write``/``_read`` (each yields an
    open transaction), ``_lock_app_clause`` and ``_lock_uids``, the schema and ``close``."""

    # Appended to the app lookup of a write: PostgreSQL's "FOR UPDATE" serialises the writers of
    # one app (so max + 1 is computed under a lock); SQLite's BEGIN IMMEDIATE already did.
    _lock_app_clause = ""

    def __init__(self, *, clock: Callable[[], float], rng: random.Random | None) -> None:
        self._clock = clock
        self._rng = rng or random.SystemRandom()

    def _write(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def _lock_uids(self, db: Tx) -> None:
        """Keep two transactions from choosing uids at once (a no-op where writers are serial)."""

    def close(self) -> None:
        raise NotImplementedError

    # ---- lookups inside a transaction -------------------------------------------------------

    def _app_row(self, db: Tx, name: str, *, lock: bool = False) -> Row:
        sql = "SELECT * FROM apps WHERE name = ?" + (self._lock_app_clause if lock else "")
        row = db.execute(sql, (name,)).fetchone()
        if row is None:
            raise NotFound(f"Couldn't find that app: {name}.")
        return row  # type: ignore[no-any-return]

    def _app_id(self, db: Tx, name: str, *, lock: bool = False) -> int:
        return int(self._app_row(db, name, lock=lock)["id"])

    @staticmethod
    def _release_row(db: Tx, app_id: int, app: str, version: int) -> Row:
        row = db.execute("SELECT * FROM releases WHERE app_id = ? AND version = ?",
                         (app_id, version)).fetchone()
        if row is None:
            raise NotFound(f"Couldn't find that release: v{version} of {app}.")
        return row  # type: ignore[no-any-return]

    @staticmethod
    def _current_release_row(db: Tx, app_id: int) -> Row | None:
        return db.execute(  # type: ignore[no-any-return]
            "SELECT * FROM releases WHERE app_id = ? AND status = 'succeeded' ORDER BY version DESC LIMIT 1",
            (app_id,)).fetchone()

    def _formation(self, db: Tx, app_id: int, app: str) -> list[Formation]:
        stored = [Formation(app=app, type=row["type"], quantity=row["quantity"], size=row["size"])
                  for row in db.execute("SELECT * FROM formation WHERE app_id = ?", (app_id,))]
        current = self._current_release_row(db, app_id)
        declared = json.loads(current["process_types"]) if current else {}
        return formation_of(app, stored, declared)

    # ---- apps ---------------------------------------------------------------------------------

    def create_app(self, name: str) -> App:
        check_app_name(name)
        with self._write() as db:
            now = self._clock()
            # ON CONFLICT DO NOTHING: two hosts racing for one name get one app and one Conflict,
            # whatever the isolation level (the UNIQUE index decides).
            row = db.execute("INSERT INTO apps (name, created_at) VALUES (?, ?) "
                             "ON CONFLICT (name) DO NOTHING RETURNING id", (name, now)).fetchone()
            if row is None:
                raise Conflict(f"Name {name} is already taken; choose another app name.")
            return App(id=int(row["id"]), name=name, created_at=now)

    def get_app(self, name: str) -> App:
        with self._read() as db:
            return _app(self._app_row(db, name))

    def list_apps(self) -> list[App]:
        with self._read() as db:
            return [_app(row) for row in db.execute("SELECT * FROM apps ORDER BY name")]

    def destroy_app(self, name: str) -> None:
        with self._write() as db:
            app_id = self._app_id(db, name, lock=True)
            db.execute("DELETE FROM apps WHERE id = ?", (app_id,))

    def set_maintenance(self, name: str, on: bool) -> App:
        with self._write() as db:
            app_id = self._app_id(db, name, lock=True)
            db.execute("UPDATE apps SET maintenance = ? WHERE id = ?", (int(bool(on)), app_id))
            return _app(self._app_row(db, name))

    def set_routing_policy(self, name: str, policy: str) -> App:
        check_routing_policy(policy)
        with self._write() as db:
            app_id = self._app_id(db, name, lock=True)
            db.execute("UPDATE apps SET routing_policy = ? WHERE id = ?", (policy, app_id))
            return _app(self._app_row(db, name))

    # ---- releases -----------------------------------------------------------------------------

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
        check_status(status)
        check_str_map(config, "config var")
        check_str_map(process_types, "process type")
        for type_name in process_types:
            check_process_type(type_name)
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            return self._insert_release(db, app_id, app, slug_id=slug_id, config=config,
                                        process_types=process_types, description=description,
                                        status=status)

    def _insert_release(self, db: Tx, app_id: int, app: str, *, slug_id: str | None,
                        config: Mapping[str, str], process_types: Mapping[str, str], description: str,
                        status: str = "succeeded") -> Release:
        """The next version, inside the caller's write transaction (the app row already locked).
        The release records the app's add-on attachments as they stand in this transaction."""
        version = int(db.execute("SELECT COALESCE(MAX(version), 0) + 1 AS next FROM releases "
                                 "WHERE app_id = ?", (app_id,)).fetchone()["next"])
        addons = [{"addon": r.addon, "attachment": r.attachment, "service": r.service, "plan": r.plan}
                  for r in self._addon_refs(db, app_id)]
        db.execute(
            "INSERT INTO releases (app_id, version, slug_id, config, process_types, description,"
            " status, created_at, addons) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (app_id, version, slug_id, dump_json(config), dump_json(process_types), description,
             status, self._clock(), json.dumps(addons, sort_keys=True, separators=(",", ":"))),
        )
        if status == "succeeded":
            self._default_web_formation(db, app_id, dict(process_types))
        return _release(app, self._release_row(db, app_id, app, version))

    @staticmethod
    def _addon_refs(db: Tx, app_id: int) -> list[AddonRef]:
        rows = db.execute(
            "SELECT addon_attachments.name AS attachment, addons.name AS addon, addons.service AS service,"
            " addons.plan AS plan FROM addon_attachments JOIN addons ON addons.id = addon_attachments.addon_id"
            " WHERE addon_attachments.app_id = ? ORDER BY addon_attachments.name", (app_id,)).fetchall()
        return [AddonRef(addon=r["addon"], attachment=r["attachment"], service=r["service"], plan=r["plan"])
                for r in rows]

    def get_release(self, app: str, version: int) -> Release:
        with self._read() as db:
            app_id = self._app_id(db, app)
            return _release(app, self._release_row(db, app_id, app, version))

    def list_releases(self, app: str) -> list[Release]:
        with self._read() as db:
            app_id = self._app_id(db, app)
            rows = db.execute("SELECT * FROM releases WHERE app_id = ? ORDER BY version", (app_id,))
            return [_release(app, row) for row in rows]

    def current_release(self, app: str) -> Release | None:
        with self._read() as db:
            app_id = self._app_id(db, app)
            row = self._current_release_row(db, app_id)
            return _release(app, row) if row else None

    def set_release_status(self, app: str, version: int, status: str) -> Release:
        check_status(status)
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            row = self._release_row(db, app_id, app, version)
            if row["status"] == status:
                return _release(app, row)
            if row["status"] != "pending":
                raise UserError(f"Release v{version} of {app} is already {row['status']}; only a "
                                "pending release can change status. Create a new release instead.")
            db.execute("UPDATE releases SET status = ? WHERE id = ?", (status, row["id"]))
            if status == "succeeded":
                self._default_web_formation(db, app_id, json.loads(row["process_types"]))
            return _release(app, self._release_row(db, app_id, app, version))

    def _default_web_formation(self, db: Tx, app_id: int, process_types: dict[str, str]) -> None:
        # Heroku scales web to 1 on the first deploy that has a web type; afterwards the row
        # exists and the user's choice (even web=0) stands.
        if "web" in process_types:
            db.execute("INSERT INTO formation (app_id, type, quantity, size) VALUES (?, 'web', 1, ?)"
                       " ON CONFLICT (app_id, type) DO NOTHING", (app_id, DEFAULT_SIZE))

    # ---- formation ----------------------------------------------------------------------------

    def get_formation(self, app: str) -> list[Formation]:
        with self._read() as db:
            app_id = self._app_id(db, app)
            return self._formation(db, app_id, app)

    def set_formation(self, app: str, type: str, *, quantity: int | None = None, size: str | None = None
                      ) -> Formation:
        check_quantity(type, quantity)
        canonical_size = dyno_size(size).name if size is not None else None
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            rows = {f.type: f for f in self._formation(db, app_id, app)}
            if type not in rows:
                raise NotFound(f"Couldn't find that process type ({type}); the current release of "
                               f"{app} defines: {', '.join(sorted(rows)) or 'none (deploy first)'}.")
            new = Formation(app=app, type=type,
                            quantity=rows[type].quantity if quantity is None else quantity,
                            size=canonical_size or rows[type].size)
            check_dyno_count(new)
            db.execute("INSERT INTO formation (app_id, type, quantity, size) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (app_id, type) DO UPDATE SET quantity = excluded.quantity, "
                       "size = excluded.size", (app_id, type, new.quantity, new.size))
            return new

    # ---- dynos --------------------------------------------------------------------------------

    def put_dyno(self, dyno: DynoRecord) -> None:
        state = DynoState(dyno.state)
        with self._write() as db:
            app_id = self._app_id(db, dyno.app)
            db.execute(
                "INSERT INTO dynos (id, app_id, name, type, release, size, command, state, pid,"
                " ip, port, created_at, state_changed_at, attached, exit_status, cgroup)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET app_id = excluded.app_id, name = excluded.name,"
                " type = excluded.type, release = excluded.release, size = excluded.size,"
                " command = excluded.command, state = excluded.state, pid = excluded.pid,"
                " ip = excluded.ip, port = excluded.port, created_at = excluded.created_at,"
                " state_changed_at = excluded.state_changed_at, attached = excluded.attached,"
                " exit_status = excluded.exit_status, cgroup = excluded.cgroup",
                (dyno.id, app_id, dyno.name, dyno.type, dyno.release, dyno.size, dyno.command,
                 state.value, dyno.pid, dyno.ip, dyno.port, dyno.created_at, dyno.state_changed_at,
                 int(dyno.attached), dyno.exit_status, dyno.cgroup),
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

    def list_dynos(self, app: str | None = None, *, state: DynoState | None = None) -> list[DynoRecord]:
        """The dynos' records (of one app; in one state), in ``dyno_sort_key`` order. The state filter
        is SQL's: the reconcile pass asks each app for its crashed dynos on every wake, and turning
        every row of 1,000 dynos into records took 10-30 ms a pass (issue 16)."""
        where: list[str] = []
        args: list[object] = []
        with self._read() as db:
            query = "SELECT dynos.*, apps.name AS app_name FROM dynos JOIN apps ON apps.id = dynos.app_id"
            if app is not None:
                where.append("dynos.app_id = ?")
                args.append(self._app_id(db, app))
            if state is not None:
                where.append("dynos.state = ?")
                args.append(DynoState(state).value)
            if where:
                query += " WHERE " + " AND ".join(where)
            rows = db.execute(query, tuple(args)).fetchall()
        return sorted((_dyno(row) for row in rows), key=dyno_sort_key)

    def delete_dyno(self, dyno_id: str) -> None:
        """Forget a dyno. Idempotent: a dyno's record can go with its app (cascade) before the
        manager's own cleanup runs, and that is not an error."""
        with self._write() as db:
            db.execute("DELETE FROM dynos WHERE id = ?", (dyno_id,))

    def next_run_number(self, app: str) -> int:
        """A random 4-digit N with no dyno of ``app`` named run.N (not reserved: use it at once)."""
        with self._read() as db:
            app_id = self._app_id(db, app)
            used = {row["name"] for row in db.execute(
                "SELECT name FROM dynos WHERE app_id = ? AND name LIKE 'run.%'", (app_id,))}
        return pick_run_number(app, used, self._rng)

    # ---- the app's uid and features -----------------------------------------------------------

    def app_uid(self, app: str, first: int, count: int) -> int:
        """The app's own uid: the lowest in [first, first+count) no other app holds, assigned on
        the first call and kept until the app is destroyed (even if the range changes later:
        the app's files are owned by it)."""
        check_uid_range(first, count)
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            row = db.execute("SELECT uid FROM app_uids WHERE app_id = ?", (app_id,)).fetchone()
            if row is not None:
                return int(row["uid"])
            self._lock_uids(db)
            taken = [int(r["uid"]) for r in db.execute(
                "SELECT uid FROM app_uids WHERE uid >= ? AND uid < ? ORDER BY uid", (first, first + count))]
            uid = lowest_free_uid(first, count, taken)
            db.execute("INSERT INTO app_uids (app_id, uid) VALUES (?, ?)", (app_id, uid))
            return uid

    def list_features(self, app: str) -> set[str]:
        with self._read() as db:
            app_id = self._app_id(db, app)
            return {row["name"] for row in db.execute(
                "SELECT name FROM app_features WHERE app_id = ?", (app_id,))}

    def set_feature(self, app: str, name: str, enabled: bool) -> None:
        check_feature_name(name)
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            if enabled:
                db.execute("INSERT INTO app_features (app_id, name) VALUES (?, ?)"
                           " ON CONFLICT (app_id, name) DO NOTHING", (app_id, name))
            else:
                db.execute("DELETE FROM app_features WHERE app_id = ? AND name = ?", (app_id, name))

    # ---- the app's buildpacks -----------------------------------------------------------------

    def get_buildpacks(self, app: str) -> list[str]:
        """The app's buildpacks in the order its builds run them; [] when none is set (detect)."""
        with self._read() as db:
            app_id = self._app_id(db, app)
            return [row["url"] for row in db.execute(
                "SELECT url FROM app_buildpacks WHERE app_id = ? ORDER BY position", (app_id,))]

    def set_buildpacks(self, app: str, urls: list[str]) -> None:
        """Replace the whole list in one transaction (Heroku: not a release; the next build uses it)."""
        urls = check_buildpacks(urls)
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            db.execute("DELETE FROM app_buildpacks WHERE app_id = ?", (app_id,))
            for position, url in enumerate(urls):
                db.execute("INSERT INTO app_buildpacks (app_id, position, url) VALUES (?, ?, ?)",
                           (app_id, position, url))

    # ---- domains and certificates -------------------------------------------------------------

    def list_domains(self, app: str) -> list[str]:
        """The app's custom hostnames, sorted (its default hostname is the platform's to add)."""
        with self._read() as db:
            app_id = self._app_id(db, app)
            return [row["hostname"] for row in db.execute(
                "SELECT hostname FROM domains WHERE app_id = ? ORDER BY hostname", (app_id,))]

    def add_domain(self, app: str, hostname: str) -> None:
        check_hostname(hostname)
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            # The primary key decides between racing writers; the loser learns who holds it.
            added = db.execute("INSERT INTO domains (hostname, app_id, created_at) VALUES (?, ?, ?)"
                               " ON CONFLICT (hostname) DO NOTHING RETURNING hostname",
                               (hostname, app_id, self._clock())).fetchone()
            if added is None:
                owner = db.execute("SELECT app_id FROM domains WHERE hostname = ?", (hostname,)).fetchone()
                where = "this app" if owner is not None and owner["app_id"] == app_id else "another app"
                raise Conflict(f"Domain {hostname} is already in use by {where}; remove it there first.")

    def remove_domain(self, app: str, hostname: str) -> None:
        """Remove a custom domain and any certificate for it."""
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            if db.execute("DELETE FROM domains WHERE hostname = ? AND app_id = ?",
                          (hostname, app_id)).rowcount == 0:
                raise NotFound(f"Couldn't find that domain: {hostname} on {app}.")
            db.execute("DELETE FROM certs WHERE app_id = ? AND domain = ?", (app_id, hostname))

    def list_certs(self, app: str) -> list[tuple[str, str, str]]:
        """(domain, certificate PEM, private key PEM) for each certificate of the app."""
        with self._read() as db:
            app_id = self._app_id(db, app)
            return [(row["domain"], row["cert_pem"], row["key_pem"]) for row in db.execute(
                "SELECT * FROM certs WHERE app_id = ? ORDER BY domain", (app_id,))]

    def add_cert(self, app: str, domain: str, cert_pem: str, key_pem: str) -> None:
        """Store (or renew: replace) the certificate for one of the app's domains. The caller
        checks that the PEMs parse and match; the ledger only keeps them."""
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            db.execute("INSERT INTO certs (app_id, domain, cert_pem, key_pem, created_at)"
                       " VALUES (?, ?, ?, ?, ?) ON CONFLICT (app_id, domain)"
                       " DO UPDATE SET cert_pem = excluded.cert_pem, key_pem = excluded.key_pem,"
                       " created_at = excluded.created_at",
                       (app_id, domain, cert_pem, key_pem, self._clock()))

    # ---- add-ons ------------------------------------------------------------------------------
    # Every change to an app's attachments is one transaction with the release it makes: the
    # config vars and the release's add-on set can never disagree with the attachments.

    def _addon_row(self, db: Tx, name: str) -> Row:
        row = db.execute("SELECT addons.*, apps.name AS app_name FROM addons JOIN apps ON apps.id = addons.app_id"
                         " WHERE addons.name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"Couldn't find that add-on: {name}.")
        return row  # type: ignore[no-any-return]

    def _release_with_vars(self, db: Tx, app_id: int, app: str, *, add: Mapping[str, str],
                           remove: Iterable[str], description: str) -> Release:
        current = self._current_release_row(db, app_id)
        config = json.loads(current["config"]) if current else {}
        for var in remove:
            config.pop(var, None)
        config.update(add)
        return self._insert_release(
            db, app_id, app, slug_id=current["slug_id"] if current else None, config=config,
            process_types=json.loads(current["process_types"]) if current else {}, description=description)

    def _attach(self, db: Tx, addon: Row, app_id: int, app: str, name: str, attachment_id: str) -> Release:
        check_attachment_name(name)
        if db.execute("SELECT 1 FROM addon_attachments WHERE app_id = ? AND name = ?",
                      (app_id, name)).fetchone() is not None:
            raise Conflict(f"{app} already has an attachment named {name}; choose another name with --as.")
        wanted = attachment_vars(name, json.loads(addon["config"]))
        current = self._current_release_row(db, app_id)
        check_vars_free(app, name, wanted, json.loads(current["config"]) if current else {})
        db.execute("INSERT INTO addon_attachments (id, addon_id, app_id, name, created_at) VALUES (?, ?, ?, ?, ?)",
                   (attachment_id, addon["id"], app_id, name, self._clock()))
        return self._release_with_vars(db, app_id, app, add=wanted, remove=(),
                                       description=f"Attach {name} ({addon['name']})")

    def create_addon(self, addon: Addon, *, attachment: str, attachment_id: str) -> Release:
        """Record a provisioned add-on, owned by ``addon.app`` and attached to it as
        ``attachment``, and make the app's release with its config vars."""
        check_addon_name(addon.name)
        check_attachment_name(attachment)
        check_str_map(addon.config, "add-on config var")
        with self._write() as db:
            app_id = self._app_id(db, addon.app, lock=True)
            inserted = db.execute(
                "INSERT INTO addons (id, name, app_id, service, plan, config, provider_data, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (addon.id, addon.name, app_id, addon.service, addon.plan, dump_json(addon.config),
                 json.dumps(addon.provider_data, sort_keys=True), addon.created_at)).fetchone()
            if inserted is None:
                raise Conflict(f"The add-on name {addon.name} is already taken; choose another with --name.")
            return self._attach(db, self._addon_row(db, addon.name), app_id, addon.app, attachment, attachment_id)

    def get_addon(self, name: str) -> Addon:
        with self._read() as db:
            return _addon(self._addon_row(db, name))

    def list_addons(self, app: str | None = None) -> list[Addon]:
        """Every add-on, or those attached to ``app`` (owned by it or by another app), by name."""
        with self._read() as db:
            query = "SELECT addons.*, apps.name AS app_name FROM addons JOIN apps ON apps.id = addons.app_id"
            if app is None:
                rows = db.execute(query + " ORDER BY addons.name").fetchall()
            else:
                app_id = self._app_id(db, app)
                rows = db.execute(query + " WHERE addons.id IN (SELECT addon_id FROM addon_attachments"
                                  " WHERE app_id = ?) ORDER BY addons.name", (app_id,)).fetchall()
            return [_addon(row) for row in rows]

    def list_attachments(self, *, app: str | None = None, addon: str | None = None) -> list[AddonAttachment]:
        with self._read() as db:
            query = ("SELECT addon_attachments.*, apps.name AS app_name, addons.name AS addon_name"
                     " FROM addon_attachments JOIN apps ON apps.id = addon_attachments.app_id"
                     " JOIN addons ON addons.id = addon_attachments.addon_id")
            where: list[str] = []
            params: list[Any] = []
            if app is not None:
                where.append("addon_attachments.app_id = ?")
                params.append(self._app_id(db, app))
            if addon is not None:
                where.append("addon_attachments.addon_id = ?")
                params.append(self._addon_row(db, addon)["id"])
            if where:
                query += " WHERE " + " AND ".join(where)
            rows = db.execute(query + " ORDER BY apps.name, addon_attachments.name", params).fetchall()
            return [_attachment(row) for row in rows]

    def attach_addon(self, addon: str, app: str, name: str, *, attachment_id: str) -> Release:
        check_attachment_name(name)
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            return self._attach(db, self._addon_row(db, addon), app_id, app, name, attachment_id)

    def detach_addon(self, app: str, attachment: str) -> Release:
        with self._write() as db:
            app_id = self._app_id(db, app, lock=True)
            row = db.execute(
                "SELECT addon_attachments.*, addons.name AS addon_name, addons.config AS addon_config"
                " FROM addon_attachments JOIN addons ON addons.id = addon_attachments.addon_id"
                " WHERE addon_attachments.app_id = ? AND addon_attachments.name = ?",
                (app_id, attachment)).fetchone()
            if row is None:
                raise NotFound(f"Couldn't find that attachment: {attachment} on {app}.")
            return self._detach(db, app_id, app, row["id"], row["name"], row["addon_name"], row["addon_config"])

    def _detach(self, db: Tx, app_id: int, app: str, attachment_id: str, attachment: str, addon: str,
                addon_config: str) -> Release:
        db.execute("DELETE FROM addon_attachments WHERE id = ?", (attachment_id,))
        gone = attachment_vars(attachment, json.loads(addon_config))
        return self._release_with_vars(db, app_id, app, add={}, remove=gone,
                                       description=f"Detach {attachment} ({addon})")

    def destroy_addon(self, name: str, *, force: bool = False) -> list[Release]:
        """Forget an add-on: detached from every app (a release each), then removed. Refused while
        an app other than its owner has it attached, unless ``force``."""
        with self._write() as db:
            addon = self._addon_row(db, name)
            rows = db.execute(
                "SELECT addon_attachments.*, apps.name AS app_name"
                " FROM addon_attachments JOIN apps ON apps.id = addon_attachments.app_id"
                " WHERE addon_attachments.addon_id = ? ORDER BY apps.name, addon_attachments.name",
                (addon["id"],)).fetchall()
            others = sorted({r["app_name"] for r in rows if r["app_id"] != addon["app_id"]})
            if others and not force:
                raise Conflict(f"{name} is still attached to {', '.join(others)}; detach it there first, "
                               "or pass --force to detach it everywhere.")
            releases = []
            for app_id in sorted({r["app_id"] for r in rows}):
                app = next(r["app_name"] for r in rows if r["app_id"] == app_id)
                self._app_id(db, app, lock=True)
                for row in (r for r in rows if r["app_id"] == app_id):
                    releases.append(self._detach(db, app_id, app, row["id"], row["name"], addon["name"],
                                                 addon["config"]))
            db.execute("DELETE FROM addons WHERE id = ?", (addon["id"],))
            return releases

    def update_addon(self, name: str, *, config: Mapping[str, str] | None = None,
                     provider_data: Mapping[str, object] | None = None, plan: str | None = None,
                     description: str | None = None) -> list[Release]:
        """Change an add-on's config, provider data or plan. When its config vars change, every
        attached app gets a release carrying the new values (one transaction for all)."""
        if config is not None:
            check_str_map(dict(config), "add-on config var")
        with self._write() as db:
            addon = self._addon_row(db, name)
            old_config = json.loads(addon["config"])
            new_config = dict(config) if config is not None else old_config
            db.execute("UPDATE addons SET config = ?, provider_data = ?, plan = ? WHERE id = ?",
                       (dump_json(new_config),
                        json.dumps(dict(provider_data) if provider_data is not None
                                   else json.loads(addon["provider_data"]), sort_keys=True),
                        plan or addon["plan"], addon["id"]))
            if new_config == old_config and plan in (None, addon["plan"]):
                return []
            releases = []
            rows = db.execute(
                "SELECT addon_attachments.name AS name, apps.name AS app_name, apps.id AS app_id"
                " FROM addon_attachments JOIN apps ON apps.id = addon_attachments.app_id"
                " WHERE addon_id = ? ORDER BY apps.name, addon_attachments.name", (addon["id"],)).fetchall()
            for row in rows:
                self._app_id(db, row["app_name"], lock=True)
                releases.append(self._release_with_vars(
                    db, row["app_id"], row["app_name"], add=attachment_vars(row["name"], new_config),
                    remove=attachment_vars(row["name"], old_config),
                    description=description or f"Update {row['name']} ({name})"))
            return releases


# ---- row -> model ----------------------------------------------------------------------------

def _app(row: Row) -> App:
    return App(id=int(row["id"]), name=row["name"], created_at=row["created_at"],
               maintenance=bool(row["maintenance"]), routing_policy=row["routing_policy"])


def _release(app: str, row: Row) -> Release:
    return Release(app=app, version=row["version"], slug_id=row["slug_id"], config=json.loads(row["config"]),
                   description=row["description"], created_at=row["created_at"],
                   process_types=json.loads(row["process_types"]), status=row["status"],
                   addons=tuple(AddonRef(**ref) for ref in json.loads(row["addons"])))


def _addon(row: Row) -> Addon:
    return Addon(id=row["id"], name=row["name"], app=row["app_name"], service=row["service"], plan=row["plan"],
                 config=json.loads(row["config"]), provider_data=json.loads(row["provider_data"]),
                 created_at=row["created_at"])


def _attachment(row: Row) -> AddonAttachment:
    return AddonAttachment(id=row["id"], addon=row["addon_name"], app=row["app_name"], name=row["name"],
                           created_at=row["created_at"])


def _dyno(row: Row) -> DynoRecord:
    return DynoRecord(
        id=row["id"], app=row["app_name"], name=row["name"], type=row["type"], release=row["release"],
        size=row["size"], command=row["command"], state=DynoState(row["state"]), pid=row["pid"],
        ip=row["ip"], port=row["port"], created_at=row["created_at"],
        state_changed_at=row["state_changed_at"], attached=bool(row["attached"]),
        exit_status=row["exit_status"], cgroup=row["cgroup"])
