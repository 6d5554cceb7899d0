"""Add-on services and their plans, in Heroku's names, with the limits dynod enforces (pure).

Heroku's published limits per plan (Dev Center, "Heroku Postgres Plans", "Heroku Key-Value
Store"): storage and connections for Postgres, memory and clients for Redis. dynod runs each
add-on as its own server, so a plan also says how much memory its cgroup may use: a noisy add-on
hits its own limit, never another's.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..errors import NotFound, UserError

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Plan:
    service: str
    name: str
    memory_mb: int  # the server's cgroup memory limit (Redis: also its maxmemory)
    connections: int  # PostgreSQL max connections for the add-on's role; Redis maxclients
    storage_mb: int = 0  # PostgreSQL: the database's size limit (0 for Redis: memory is the limit)
    backups_kept: int = 0  # pg:backups retention (Heroku's per-plan retention)
    maxmemory_policy: str = "noeviction"  # Redis: Heroku's default

    @property
    def id(self) -> str:
        return f"{self.service}:{self.name}"


@dataclass(frozen=True, slots=True)
class Service:
    name: str  # heroku-postgresql
    human_name: str  # Heroku Postgres
    addon_prefix: str  # add-on names: postgresql-<adjective>-<number>
    attachment: str  # the first attachment's name: DATABASE, REDIS
    color_prefix: str  # later attachments: HEROKU_POSTGRESQL_<COLOR>
    default_plan: str
    plans: tuple[Plan, ...]

    def plan(self, name: str | None) -> Plan:
        wanted = name or self.default_plan
        for plan in self.plans:
            if plan.name == wanted:
                return plan
        raise NotFound(f"Couldn't find that plan: {self.name}:{wanted}; see `dynoctl addons:plans {self.name}` "
                       f"({', '.join(p.name for p in self.plans)}).")


POSTGRESQL = Service(
    name="heroku-postgresql", human_name="Heroku Postgres", addon_prefix="postgresql", attachment="DATABASE",
    color_prefix="HEROKU_POSTGRESQL", default_plan="essential-0",
    plans=(
        Plan("heroku-postgresql", "essential-0", memory_mb=256, connections=20, storage_mb=1024, backups_kept=5),
        Plan("heroku-postgresql", "essential-1", memory_mb=512, connections=20, storage_mb=10240, backups_kept=5),
        Plan("heroku-postgresql", "essential-2", memory_mb=1024, connections=40, storage_mb=32768, backups_kept=5),
        Plan("heroku-postgresql", "standard-0", memory_mb=2048, connections=120, storage_mb=65536,
             backups_kept=25),
    ))
REDIS = Service(
    name="heroku-redis", human_name="Heroku Key-Value Store", addon_prefix="redis", attachment="REDIS",
    color_prefix="HEROKU_REDIS", default_plan="mini",
    plans=(
        Plan("heroku-redis", "mini", memory_mb=25, connections=20),
        Plan("heroku-redis", "premium-0", memory_mb=50, connections=40),
        Plan("heroku-redis", "premium-1", memory_mb=100, connections=80),
        Plan("heroku-redis", "premium-2", memory_mb=250, connections=200),
        Plan("heroku-redis", "premium-3", memory_mb=500, connections=400),
    ))
BUILT_IN: dict[str, Service] = {s.name: s for s in (POSTGRESQL, REDIS)}
# What users type: `addons:create heroku-postgresql`, or the short names Heroku's CLI accepts too.
ALIASES = {"postgresql": "heroku-postgresql", "postgres": "heroku-postgresql", "redis": "heroku-redis",
           "heroku-key-value-store": "heroku-redis"}

# Heroku's attachment colors (HEROKU_POSTGRESQL_<COLOR>_URL).
COLORS = ("AMBER", "AQUA", "BLACK", "BLUE", "BRONZE", "BROWN", "CHARCOAL", "COBALT", "COPPER", "CRIMSON",
          "CYAN", "GOLD", "GRAY", "GREEN", "IVORY", "JADE", "LIME", "MAGENTA", "MAROON", "MAUVE", "NAVY",
          "OLIVE", "ONYX", "ORANGE", "PINK", "PUCE", "PURPLE", "RED", "ROSE", "SILVER", "SKY", "TEAL",
          "VIOLET", "WHITE", "YELLOW")
NAME_WORDS = ("curved", "shallow", "cubic", "rigid", "silent", "flat", "round", "sharp", "dimensional",
              "opaque", "spherical", "angular", "vertical", "clear", "solid", "tranquil", "polished")
_SPEC_RE = re.compile(r"^([a-z][a-z0-9-]*)(?::([a-z0-9][a-z0-9-]*))?$")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``heroku-postgresql:essential-0`` -> ("heroku-postgresql", "essential-0"); plan optional."""
    match = _SPEC_RE.match(spec.strip().lower()) if isinstance(spec, str) else None
    if match is None:
        raise UserError(f"Invalid add-on {spec!r}: use SERVICE[:PLAN], like heroku-postgresql:essential-0.")
    service, plan = match.groups()
    return ALIASES.get(service, service), plan


def addon_name(service: Service, taken: set[str], rng: random.Random) -> str:
    """Heroku-like: postgresql-curved-12345, not one of ``taken``."""
    while True:
        name = f"{service.addon_prefix}-{rng.choice(NAME_WORDS)}-{rng.randrange(10000, 100000)}"
        if name not in taken:
            return name


def default_attachment(service: Service, used: set[str], rng: random.Random) -> str:
    """DATABASE (or REDIS) for the app's first add-on of the service, then PREFIX_<COLOR>."""
    if service.attachment not in used:
        return service.attachment
    free = [c for c in COLORS if f"{service.color_prefix}_{c}" not in used]
    if not free:
        raise UserError(f"No attachment name left for another {service.human_name} add-on: pass --as NAME.")
    return f"{service.color_prefix}_{rng.choice(free)}"
