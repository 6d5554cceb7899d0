"""What the platform decides, as pure functions: no ledger, no dyno manager, no clock, no host.

The daemon's ``Platform`` and the API tests' in-memory fake both call these, so the API and
dynoctl are tested against the same rules the daemon applies:

- config changes: which names are set and which unset, valid names and values, the 32 kB limit,
  and the release a change makes (its config and its description), or none when nothing changes;
- formation changes: process types that exist and may be scaled, quantities, sizes, eco beside
  other sizes, one dyno per type on single-dyno sizes, and the memory a formation asks of the host;
- releases: a deploy's and a rollback's description, which version a rollback goes back to, and
  the config it releases (Heroku's add-on rule).

Every refusal is a ``UserError`` with one line that says what was wrong and what to do.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..errors import NotFound, UserError
from ..ledger.rules import check_dyno_count, check_quantity
from ..manager.sleeping import check_sizes as check_eco_sizes
from ..model import DEFAULT_SIZE, Formation, Release, check_config_var_name, dyno_size

CONFIG_LIMIT_BYTES = 32 * 1024  # Heroku: 32kb of config var data per app
# Process types that are the platform's own one-off runs, not a formation (manager/reconcile.py
# SCHEDULER_TYPE, deploys.py RELEASE_TYPE).
_UNSCALABLE = {
    "release": "The release process type runs once per release (the release phase); it cannot be scaled.",
    "scheduler": "The scheduler process type is the scheduler's one-off runs (scheduler.N); it cannot be "
                 "scaled: rename the Procfile entry, or use dynoctl scheduler:add.",
}

ADJECTIVES = ("ancient", "autumn", "billowing", "bitter", "calm", "cool", "crimson", "damp", "dawn",
              "fragrant", "frosty", "gentle", "hidden", "lively", "misty", "morning", "quiet", "rapid",
              "shy", "silent", "snowy", "sparkling", "still", "sunny", "twilight", "wandering", "young")
NOUNS = ("bird", "breeze", "brook", "cloud", "dawn", "dew", "dust", "field", "fire", "flower", "forest",
         "frog", "glade", "harbor", "lake", "leaf", "meadow", "moon", "mountain", "river", "sea",
         "shadow", "sky", "snow", "sound", "star", "sun", "thunder", "tree", "water", "wave", "wind")


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def generated_app_name(taken: set[str], rng: random.Random) -> str:
    """A Heroku-style name (misty-river-12345) that no app in ``taken`` has."""
    while True:
        name = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}-{rng.randrange(10000, 99999)}"
        if name not in taken:
            return name


# -- config vars ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ConfigChange:
    """The release a config change makes: the whole new config and the release's description."""

    config: dict[str, str]
    description: str


def config_bytes(config: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in config.items())


def config_change(config: Mapping[str, str], changes: Mapping[str, Any]) -> ConfigChange | None:
    """Apply ``changes`` (name -> value to set, or None to unset) to ``config``.

    None when the config would stay as it is (setting a var to its value, unsetting one that
    is not set): such a change makes no release. The description names only what changed for
    real, sorted, as "Set A, B config vars; Remove C config vars".
    """
    if not changes:
        raise UserError("No config vars given: pass KEY=VALUE pairs to set or KEY names to unset.")
    for key, value in changes.items():
        check_config_var_name(key)
        if value is not None and not isinstance(value, str):
            raise UserError(f"Config var {key} must be a string, got {type(value).__name__}.")
    set_names = [k for k, v in changes.items() if v is not None]
    unset_names = [k for k, v in changes.items() if v is None and k in config]
    new = {**config, **{k: v for k, v in changes.items() if v is not None}}
    for key in unset_names:
        del new[key]
    if new == dict(config):
        return None
    if config_bytes(new) > max(CONFIG_LIMIT_BYTES, config_bytes(config)):
        # Heroku's words; above it a dyno's environment would not fit the spawner's message. An
        # app already over it (a lower limit in an older dynod) may still shrink.
        raise UserError(f"Config var data (the collection of all keys and values) is limited to 32kb "
                        f"for each app; this change would make it {config_bytes(new) / 1024:.1f}kb. "
                        "Keep large data in a file or an add-on.", status=422, code="invalid_params")
    parts = []
    if set_names:
        parts.append(f"Set {', '.join(sorted(set_names))} config vars")
    if unset_names:
        parts.append(f"Remove {', '.join(sorted(unset_names))} config vars")
    return ConfigChange(config=new, description="; ".join(parts))


# -- formation ------------------------------------------------------------------------------------

class FormationChange(NamedTuple):
    """One checked ps:scale entry: None leaves the quantity or size as it is."""

    type: str
    quantity: int | None
    size: str | None  # the size's canonical name (standard-1X), when given


def formation_changes(app: str, updates: Iterable[Mapping[str, Any]], process_types: Mapping[str, str],
                      current: Iterable[Formation]) -> list[FormationChange]:
    """Check a formation update against the current release's process types and the app's
    formation, all entries before any is applied (so a bad entry changes nothing)."""
    checked: list[FormationChange] = []
    for update in updates:
        type_ = update.get("type")
        if isinstance(type_, str) and type_ in _UNSCALABLE:
            raise UserError(_UNSCALABLE[type_])
        if not isinstance(type_, str) or type_ not in process_types:
            known = ", ".join(sorted(process_types)) or "none: deploy a Procfile first"
            raise NotFound(f"Couldn't find that process type ({type_}); this app has: {known}.")
        quantity = update.get("quantity")
        check_quantity(type_, quantity)
        size = update.get("size")
        checked.append(FormationChange(type_, quantity, dyno_size(size).name if size is not None else None))
    rows = list(current)
    check_eco_sizes(rows, checked)
    after = {f.type: f for f in rows}
    for change in checked:
        old = after.get(change.type, Formation(app=app, type=change.type, quantity=0))
        after[change.type] = Formation(app=app, type=change.type,
                                       quantity=old.quantity if change.quantity is None else change.quantity,
                                       size=old.size if change.size is None else change.size)
        check_dyno_count(after[change.type])
    return checked


def formation_memory_mb(rows: Iterable[tuple[int, str]]) -> int:
    """The memory (the sizes' quotas) that (quantity, size) rows ask for."""
    return sum(quantity * dyno_size(size).memory_mb for quantity, size in rows)


def memory_before_and_after(formations: Mapping[str, Mapping[str, tuple[int, str]]], app: str,
                            changes: Iterable[FormationChange]) -> tuple[int, int]:
    """The dyno memory every app's formation (app -> type -> (quantity, size)) asks for, before
    and after ``changes`` to ``app``'s."""
    before = formation_memory_mb(row for formation in formations.values() for row in formation.values())
    mine = dict(formations.get(app, {}))
    for type_, quantity, size in changes:
        old_quantity, old_size = mine.get(type_, (0, DEFAULT_SIZE))
        mine[type_] = (old_quantity if quantity is None else quantity, old_size if size is None else size)
    after = formation_memory_mb(row for name, formation in formations.items() if name != app
                                for row in formation.values())
    return before, after + formation_memory_mb(mine.values())


def check_host_memory(*, before_mb: int, after_mb: int, host_mb: int, ratio: float) -> None:
    """Refuse a formation change that would ask more of the host than ``ratio`` times its RAM.

    A change that does not grow the total is always allowed, so an over-full host (RAM
    removed, ratio lowered) can still be scaled down.
    """
    offered = host_mb * ratio
    if after_mb <= offered or after_mb <= before_mb:
        return
    raise UserError(
        f"Not enough memory on this host: the formations of all apps would need {_gb(after_mb)} of dyno "
        f"memory, and this host offers {_gb(offered)} ({ratio:g} x its {_gb(host_mb)} of RAM, [dynos] "
        f"memory_overcommit), of which {_gb(max(0.0, offered - before_mb))} is left; scale something down "
        "or use a smaller dyno size.", status=422, code="insufficient_memory")


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB"


# -- releases -------------------------------------------------------------------------------------

def slug_release_description(slug_id: str) -> str:
    """A release made from an uploaded slug (POST /apps/{app}/releases) without a description."""
    return f"Deploy {slug_id[:6]}"


def build_release_description(source_version: str | None, slug_id: str) -> str:
    """A build's release: named by the pushed commit (Heroku's 7 hex digits), else by its slug."""
    return f"Deploy {(source_version or slug_id)[:7]}"


def rollback_version(app: str, current_version: int, version: int | None) -> int:
    """The version a rollback goes back to: ``version``, or the one before current."""
    target = version if version is not None else current_version - 1
    if target < 1:
        raise UserError(f"{app} has no release before v{current_version} to roll back to.")
    return target


def rollback_description(target_version: int) -> str:
    return f"Rollback to v{target_version}"


def rollback_config(target: Release, current: Release) -> dict[str, str]:
    """The config a rollback to ``target`` releases: ``target``'s, under Heroku's add-on rule.

    A rollback never re-creates or destroys an add-on: the add-ons attached now stay, with their
    config vars as they are now; the vars of add-ons gone since are dropped.
    """
    config = dict(target.config)
    now = {ref.attachment for ref in current.addons}
    for ref in target.addons:
        if ref.attachment not in now:
            config.pop(f"{ref.attachment}_URL", None)
    for ref in current.addons:
        key = f"{ref.attachment}_URL"
        if key in current.config:
            config[key] = current.config[key]
    return config


def rollback_addons_warning(app: str, target: Release, current: Release) -> str | None:
    """What to tell the user when the rolled-back release had other add-ons than the app has now."""
    if set(target.addons) == set(current.addons):
        return None

    def names(release: Release) -> str:
        return ", ".join(f"{r.attachment} ({r.addon})" for r in release.addons) or "none"

    return (f"v{target.version} had add-ons {names(target)}; {app} has {names(current)}. A rollback does "
            "not create, destroy, attach or detach add-ons: use addons:create/attach/detach for that.")
