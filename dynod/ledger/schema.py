"""The ledger's schema, written once: each migration for both backends, dialect types filled in.

The tables, columns, constraints and indexes are the same in SQLite and PostgreSQL; what differs
is how each spells a few things: a row id and a column that references one (SQLite's INTEGER
PRIMARY KEY is its rowid; PostgreSQL's is a 64-bit identity), a time (REAL or DOUBLE PRECISION),
a JSON check (json_valid/json_type or jsonb_typeof), and the triggers that keep releases
append-only (SQLite's trigger bodies, PostgreSQL's PL/pgSQL functions). A ``Dialect`` holds those
spellings; ``migrations(dialect)`` writes every version's script in it. The rule each trigger
keeps is stated once here (which columns a release may never change, which version comes next),
so the two backends cannot drift apart.

Each migration moves the schema one version up; a version means the same tables in either
backend. Never change what a shipped version creates (ledgers made by it are not re-migrated):
append a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

# What a release records; none of it may change once written (only a pending status may move).
# v5 added the add-on set.
RELEASE_COLUMNS_V1 = ("id", "app_id", "version", "slug_id", "config", "process_types", "description",
                      "created_at")
RELEASE_COLUMNS_V5 = (*RELEASE_COLUMNS_V1, "addons")

_NEXT_VERSION = "releases are append-only: a new release must be the next version"
_ONLY_STATUS = "releases are append-only: only a pending release''s status may change"
_NO_DELETE = "releases are append-only: destroy the app to remove its releases"


@dataclass(frozen=True)
class Dialect:
    name: str
    row_id: str  # a table's own id column
    ref: str  # a column holding another table's row id
    time: str  # seconds since the epoch, with a fraction
    json_object: Callable[[str], str]  # the CHECK that a TEXT column holds a JSON object
    json_array: Callable[[str], str]
    releases_triggers: Callable[[Sequence[str]], str]  # v1's: next version, no update, no delete
    releases_no_update: Callable[[Sequence[str]], str]  # the no-update rule remade for these columns


# ---- SQLite -----------------------------------------------------------------------------------

def _sqlite_json(kind: str) -> Callable[[str], str]:
    return lambda column: f"json_valid({column}) AND json_type({column}) = '{kind}'"


def _sqlite_unchanged(columns: Sequence[str]) -> str:
    # IS, not =: NULL slug_ids compare equal.
    return " AND ".join(f"NEW.{c} IS OLD.{c}" for c in columns)


def _sqlite_no_update(columns: Sequence[str]) -> str:
    return f"""CREATE TRIGGER releases_no_update BEFORE UPDATE ON releases
    WHEN NOT (
        OLD.status = 'pending' AND NEW.status IN ('succeeded', 'failed')
        AND {_sqlite_unchanged(columns)}
    )
    BEGIN
        SELECT RAISE(ABORT, '{_ONLY_STATUS}');
    END;"""


def _sqlite_releases_triggers(columns: Sequence[str]) -> str:
    return f"""-- Versions are gapless: v(N+1) only after vN. This also defeats INSERT OR REPLACE, whose
    -- replacement row would carry an existing version.
    CREATE TRIGGER releases_version_is_next BEFORE INSERT ON releases
    WHEN NEW.version != (SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = NEW.app_id)
    BEGIN
        SELECT RAISE(ABORT, '{_NEXT_VERSION}');
    END;

    {_sqlite_no_update(columns)}

    -- While the app exists its history is kept; the app's own deletion cascades (by then the
    -- app row is gone, so this trigger lets the cascade through).
    CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases
    WHEN EXISTS (SELECT 1 FROM apps WHERE id = OLD.app_id)
    BEGIN
        SELECT RAISE(ABORT, '{_NO_DELETE}');
    END;"""


SQLITE = Dialect(
    name="sqlite", row_id="INTEGER PRIMARY KEY", ref="INTEGER", time="REAL",
    json_object=_sqlite_json("object"), json_array=_sqlite_json("array"),
    releases_triggers=_sqlite_releases_triggers,
    # SQLite cannot replace a trigger: drop it and make it again, in the migration's transaction.
    releases_no_update=lambda columns: f"DROP TRIGGER releases_no_update;\n    {_sqlite_no_update(columns)}",
)


# ---- PostgreSQL -------------------------------------------------------------------------------

def _pg_json(kind: str) -> Callable[[str], str]:
    return lambda column: f"jsonb_typeof({column}::jsonb) = '{kind}'"


def _pg_unchanged(columns: Sequence[str]) -> str:
    # The only column that may be NULL (slug_id) compares with IS NOT DISTINCT FROM.
    return " AND ".join(f"NEW.{c} IS NOT DISTINCT FROM OLD.{c}" if c == "slug_id" else f"NEW.{c} = OLD.{c}"
                        for c in columns)


def _pg_no_update_function(columns: Sequence[str], *, replace: bool) -> str:
    create = "CREATE OR REPLACE" if replace else "CREATE"
    return f"""{create} FUNCTION releases_no_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT (OLD.status = 'pending' AND NEW.status IN ('succeeded', 'failed')
                AND {_pg_unchanged(columns)}) THEN
            RAISE EXCEPTION '{_ONLY_STATUS}'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$;"""


def _pg_releases_triggers(columns: Sequence[str]) -> str:
    return f"""-- Versions are gapless: v(N+1) only after vN (a row trigger sees the rows its own statement
    -- inserted before, so a multi-row INSERT cannot skip either).
    CREATE FUNCTION releases_version_is_next() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.version IS DISTINCT FROM
           (SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = NEW.app_id) THEN
            RAISE EXCEPTION '{_NEXT_VERSION}'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER releases_version_is_next BEFORE INSERT ON releases
        FOR EACH ROW EXECUTE FUNCTION releases_version_is_next();

    {_pg_no_update_function(columns, replace=False)}
    CREATE TRIGGER releases_no_update BEFORE UPDATE ON releases
        FOR EACH ROW EXECUTE FUNCTION releases_no_update();

    -- While the app exists its history is kept; the app's own deletion cascades (the cascade
    -- runs after the app row is gone, so this lets it through).
    CREATE FUNCTION releases_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM apps WHERE id = OLD.app_id) THEN
            RAISE EXCEPTION '{_NO_DELETE}'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END $$;
    CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases
        FOR EACH ROW EXECUTE FUNCTION releases_no_delete();

    -- SQLite has no TRUNCATE; here it would skip the row triggers, so it is refused whole.
    CREATE FUNCTION releases_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{_NO_DELETE}'
            USING ERRCODE = 'integrity_constraint_violation';
    END $$;
    CREATE TRIGGER releases_no_truncate BEFORE TRUNCATE ON releases
        FOR EACH STATEMENT EXECUTE FUNCTION releases_no_truncate();"""


POSTGRES = Dialect(
    name="postgres", row_id="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", ref="BIGINT",
    time="DOUBLE PRECISION", json_object=_pg_json("object"), json_array=_pg_json("array"),
    releases_triggers=_pg_releases_triggers,
    # The trigger stays; the function it runs is replaced.
    releases_no_update=lambda columns: _pg_no_update_function(columns, replace=True),
)


# ---- the migrations ---------------------------------------------------------------------------

def _v1(d: Dialect) -> str:
    return f"""
    CREATE TABLE apps (
        id          {d.row_id},
        name        TEXT NOT NULL UNIQUE,
        created_at  {d.time} NOT NULL,
        maintenance INTEGER NOT NULL DEFAULT 0 CHECK (maintenance IN (0, 1))
    );

    CREATE TABLE releases (
        id            {d.row_id},
        app_id        {d.ref} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        version       INTEGER NOT NULL CHECK (version >= 1),
        slug_id       TEXT,
        config        TEXT NOT NULL CHECK ({d.json_object("config")}),
        process_types TEXT NOT NULL CHECK ({d.json_object("process_types")}),
        description   TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        created_at    {d.time} NOT NULL,
        UNIQUE (app_id, version)
    );

    {d.releases_triggers(RELEASE_COLUMNS_V1)}

    CREATE TABLE formation (
        app_id   {d.ref} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        type     TEXT NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity >= 0),
        size     TEXT NOT NULL,
        PRIMARY KEY (app_id, type)
    );

    CREATE TABLE dynos (
        id               TEXT PRIMARY KEY,
        app_id           {d.ref} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        name             TEXT NOT NULL,
        type             TEXT NOT NULL,
        release          INTEGER NOT NULL,
        size             TEXT NOT NULL,
        command          TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('starting', 'up', 'crashed', 'down')),
        pid              INTEGER,
        ip               TEXT,
        port             INTEGER NOT NULL,
        created_at       {d.time} NOT NULL,
        state_changed_at {d.time} NOT NULL,
        attached         INTEGER NOT NULL DEFAULT 0 CHECK (attached IN (0, 1)),
        exit_status      INTEGER
    );
    CREATE INDEX dynos_by_app ON dynos (app_id, name);
    """


def _v2(d: Dialect) -> str:
    # Custom domains (a hostname routes to one app on the host) and TLS certificates.
    return f"""
    CREATE TABLE domains (
        hostname   TEXT PRIMARY KEY,
        app_id     {d.ref} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        created_at {d.time} NOT NULL
    );

    -- Keyed by domain, not by a domains row: the app's default hostname may carry a cert too.
    CREATE TABLE certs (
        app_id     {d.ref} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        domain     TEXT NOT NULL,
        cert_pem   TEXT NOT NULL,
        key_pem    TEXT NOT NULL,
        created_at {d.time} NOT NULL,
        PRIMARY KEY (app_id, domain)
    );
    """


def _v3(d: Dialect) -> str:
    # How the router picks a web dyno for the app: Heroku's random, or power of two choices.
    return """
    ALTER TABLE apps ADD COLUMN routing_policy TEXT NOT NULL DEFAULT 'random'
        CHECK (routing_policy IN ('random', 'p2c'));
    """


def _v4(d: Dialect) -> str:
    # Each app's own uid (its dynos run as uid=gid=N, as Heroku runs each dyno as its own user),
    # released with the app; and the app's enabled features (Heroku's "preboot", ...).
    return f"""
    CREATE TABLE app_uids (
        app_id {d.ref} PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
        uid    INTEGER NOT NULL UNIQUE CHECK (uid > 0)
    );

    CREATE TABLE app_features (
        app_id {d.ref} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        name   TEXT NOT NULL,
        PRIMARY KEY (app_id, name)
    );
    """


def _v5(d: Dialect) -> str:
    # Add-ons (Heroku's: a resource owned by one app, attached to it and to others under an
    # attachment name that prefixes its config vars) and the add-on set each release records,
    # as immutable as the rest of the release.
    return f"""
    CREATE TABLE addons (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        app_id        {d.ref} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        service       TEXT NOT NULL,
        plan          TEXT NOT NULL,
        config        TEXT NOT NULL CHECK ({d.json_object("config")}),
        provider_data TEXT NOT NULL CHECK ({d.json_object("provider_data")}),
        created_at    {d.time} NOT NULL
    );

    CREATE TABLE addon_attachments (
        id         TEXT NOT NULL UNIQUE,
        addon_id   TEXT NOT NULL REFERENCES addons(id) ON DELETE CASCADE,
        app_id     {d.ref} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        created_at {d.time} NOT NULL,
        PRIMARY KEY (app_id, name)
    );
    CREATE INDEX addon_attachments_by_addon ON addon_attachments (addon_id);

    ALTER TABLE releases ADD COLUMN addons TEXT NOT NULL DEFAULT '[]'
        CHECK ({d.json_array("addons")});

    {d.releases_no_update(RELEASE_COLUMNS_V5)}
    """


def _v6(d: Dialect) -> str:
    # The app's buildpacks in order (Heroku's buildpack installations: app state, not a release;
    # the next build uses them), and where each dyno's cgroup is, so that a dynod started from
    # another cgroup finds it again.
    return f"""
    CREATE TABLE app_buildpacks (
        app_id   {d.ref} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        position INTEGER NOT NULL CHECK (position >= 0),
        url      TEXT NOT NULL CHECK (length(url) > 0),
        PRIMARY KEY (app_id, position),
        UNIQUE (app_id, url)
    );

    ALTER TABLE dynos ADD COLUMN cgroup TEXT NOT NULL DEFAULT '';
    """


_VERSIONS: tuple[Callable[[Dialect], str], ...] = (_v1, _v2, _v3, _v4, _v5, _v6)
SCHEMA_VERSION = len(_VERSIONS)


def migrations(dialect: Dialect) -> list[str]:
    """Every version's script in ``dialect``: entry N-1 moves a ledger from vN-1 to vN."""
    return [version(dialect) for version in _VERSIONS]
