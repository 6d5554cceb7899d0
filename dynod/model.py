"""The platform's nouns as plain data: no I/O here, so every rule about them tests in microseconds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from .errors import UserError

MiB = 1024 * 1024

# Heroku's app names: lowercase letters, digits and dashes, starting with a letter, 3-30 long.
APP_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$")
# Heroku's Procfile process type names.
PROCESS_TYPE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# POSIX-ish environment names; Heroku refuses names with '=' or starting with a digit.
CONFIG_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names the platform sets itself; a config var may not override them.
RESERVED_CONFIG_VARS = frozenset({"PORT", "DYNO", "HOME", "PS"})


@dataclass(frozen=True, slots=True)
class DynoSize:
    name: str
    memory_mb: int  # the quota: over it is R14; the hard limit is a multiple of it (settings)
    pids: int  # Heroku's process/thread limit for the size
    cpu_weight: int  # relative CPU share (cgroup v2 cpu.weight scale, 1..10000)


# Heroku's dyno sizes (Dev Center, "Dyno Types"): memory quota and process limits.
DYNO_SIZES: dict[str, DynoSize] = {
    s.name.lower(): s
    for s in (
        DynoSize("eco", 512, 256, 50),
        DynoSize("basic", 512, 256, 50),
        DynoSize("standard-1X", 512, 256, 100),
        DynoSize("standard-2X", 1024, 512, 200),
        DynoSize("performance-M", 2560, 16384, 800),
        DynoSize("performance-L", 14336, 32768, 1600),
    )
}
DEFAULT_SIZE = "standard-1X"


def dyno_size(name: str) -> DynoSize:
    try:
        return DYNO_SIZES[name.lower()]
    except KeyError:
        known = ", ".join(s.name for s in DYNO_SIZES.values())
        raise UserError(f"Unknown dyno size {name!r}: use one of {known}.") from None


def check_app_name(name: str) -> str:
    if not APP_NAME_RE.match(name):
        raise UserError(
            f"Invalid app name {name!r}: use 3-30 lowercase letters, digits and dashes, "
            "starting with a letter and not ending with a dash."
        )
    return name


def check_config_var_name(name: str) -> str:
    if not CONFIG_VAR_RE.match(name):
        raise UserError(
            f"Invalid config var name {name!r}: use letters, digits and underscores, not starting with a digit."
        )
    if name in RESERVED_CONFIG_VARS:
        raise UserError(f"Config var {name} is set by the platform and cannot be changed.")
    return name


class DynoState(StrEnum):
    STARTING = "starting"
    UP = "up"
    CRASHED = "crashed"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class App:
    id: int
    name: str
    created_at: float
    maintenance: bool = False
    routing_policy: str = "random"  # or "p2c": the less busy of two random web dynos


@dataclass(frozen=True, slots=True)
class Release:
    app: str
    version: int
    slug_id: str | None  # sha256 of the slug tarball; None for a release made before any deploy
    config: dict[str, str]
    description: str
    created_at: float
    process_types: dict[str, str] = field(default_factory=dict)  # from the slug's Procfile
    status: str = "succeeded"  # "pending" while its release phase runs, "failed" if that failed
    # The app's add-on attachments when the release was made (Heroku: slug + config + add-ons).
    addons: tuple[AddonRef, ...] = ()

    @property
    def name(self) -> str:
        return f"v{self.version}"


@dataclass(frozen=True, slots=True)
class AddonRef:
    """One attachment as a release records it: which add-on, under which name, of what plan."""

    addon: str  # the add-on's name, e.g. postgresql-curved-12345
    attachment: str  # the attachment's name, the prefix of its config vars: DATABASE -> DATABASE_URL
    service: str  # heroku-postgresql, heroku-redis, or a partner service's name
    plan: str


@dataclass(frozen=True, slots=True)
class Addon:
    """An add-on: a resource owned by one app, attachable to others (docs/addons.md)."""

    id: str
    name: str
    app: str  # the owning app ("billing app" in Heroku's words)
    service: str
    plan: str
    # Config vars without their prefix ({"URL": "postgres://..."}); each attachment prefixes them.
    config: dict[str, str]
    provider_data: dict[str, object]  # what the provider needs to find its resource again
    created_at: float


@dataclass(frozen=True, slots=True)
class AddonAttachment:
    id: str
    addon: str  # the add-on's name
    app: str  # the app it is attached to
    name: str  # DATABASE, HEROKU_POSTGRESQL_RED, REDIS, or the --as name
    created_at: float


@dataclass(frozen=True, slots=True)
class Formation:
    """How many dynos of one process type should run, and how big."""

    app: str
    type: str
    quantity: int
    size: str = DEFAULT_SIZE


@dataclass(frozen=True, slots=True)
class DynoRecord:
    """A dyno as the ledger knows it: enough to find and re-adopt it after a dynod restart."""

    id: str  # unique over the host, e.g. "myapp.web.1.3f2a"
    app: str
    name: str  # web.1, run.4821
    type: str
    release: int
    size: str
    command: str
    state: DynoState
    pid: int | None
    ip: str | None
    port: int
    created_at: float
    state_changed_at: float
    attached: bool = False
    exit_status: int | None = None
    # Where the dyno's cgroup is, as the manager wrote it (manager.dynos: one absolute directory
    # per hierarchy), so a dynod started from another cgroup finds it; "" for dynos recorded
    # before schema v6, which are looked up under dynod's own subtree instead.
    cgroup: str = ""
