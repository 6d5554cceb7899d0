"""A stack's definition: the small TOML file in the definitions dir (rootfs/ in a checkout, or
$DYNOD_ROOTFS_DIR), parsed and checked, and the digest that names its built tree.

Pure: text in, values out, no file or process touched, so every rule here tests in
milliseconds. The digest covers everything that changes the built tree (the definition, the dyno
uid/gid, the builder's own steps), so editing a definition means a new directory beside the old
one (``<name>-<hash12>``), never an in-place change under running dynos.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UserError

# Bump when the post-build steps (bootstrap.finish_rootfs) change what a built tree holds: every
# stack rebuilds.
BUILDER_VERSION = 1
DEFAULT_STACK = "debian-13"

_STACK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_COMPONENT_RE = re.compile(r"^[a-z][a-z0-9-]*$")
# Debian policy 5.6.1: package names are lowercase alphanumerics and + - . , at least two long.
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_VARIANTS = ("minbase", "buildd", "-")


def is_stack_name(name: str) -> bool:
    """Whether ``name`` may name a stack (and so a definition file and a directory)."""
    return bool(_STACK_NAME_RE.match(name))


@dataclass(frozen=True, slots=True)
class StackUser:
    """The unprivileged account app processes run as; its uid/gid come from settings."""

    name: str = "dyno"
    home: str = "/app"
    shell: str = "/bin/bash"


@dataclass(frozen=True, slots=True)
class StackDefinition:
    name: str
    suite: str
    mirror: str
    packages: tuple[str, ...]
    variant: str = "minbase"
    components: tuple[str, ...] = ("main",)
    description: str = ""
    user: StackUser = field(default_factory=StackUser)
    # The stack this one extends (a build image extends its run image): its packages come first.
    extends: str = ""


def _string(values: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = values.get(key, default)
    if value is None:
        raise UserError(f"{where}: missing {key!r}; add it (see rootfs/README.md).")
    if not isinstance(value, str) or not value:
        raise UserError(f"{where}: {key!r} must be a non-empty string.")
    return value


def _names(values: dict[str, Any], key: str, where: str, pattern: re.Pattern[str],
           default: list[str] | None = None) -> tuple[str, ...]:
    value = values.get(key, default)
    if value is None:
        raise UserError(f"{where}: missing {key!r}; add it (see rootfs/README.md).")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: {key!r} must be a list of strings.")
    for item in value:
        if not pattern.match(item):
            raise UserError(f"{where}: {key!r} has an invalid entry {item!r}.")
    if len(set(value)) != len(value):
        raise UserError(f"{where}: {key!r} lists an entry twice.")
    return tuple(value)


def _load_toml(name: str, text: str) -> dict[str, Any]:
    where = f"Stack definition {name}.toml"
    if not _STACK_NAME_RE.match(name):
        raise UserError(f"{where}: invalid stack name; use lowercase letters, digits, dots and dashes.")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where} is not valid TOML: {exc}.") from None


def extended_name(name: str, text: str) -> str:
    """The stack a definition extends ('' for none), so the store can load that one first."""
    value = _load_toml(name, text).get("extends", "")
    if not isinstance(value, str) or (value and not _STACK_NAME_RE.match(value)):
        raise UserError(f"Stack definition {name}.toml: 'extends' must name another stack definition.")
    return value


def parse_definition(name: str, text: str, base: StackDefinition | None = None) -> StackDefinition:
    """Parse and validate one definition file's text; ``name`` is the file's stem.

    With ``extends = "other"`` the definition is ``base`` (other's, parsed) plus its own packages:
    suite, mirror, variant, components and user come from the base unless given (a build image
    must match its run image, or what was built against it would not run on it).
    """
    where = f"Stack definition {name}.toml"
    values = _load_toml(name, text)
    known = {"suite", "variant", "mirror", "components", "packages", "description", "user", "extends"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}.")
    extends = extended_name(name, text)
    if extends:
        if base is None or base.name != extends:
            raise UserError(f"{where}: it extends {extends!r}, which was not given to it.")
        for key in ("suite", "mirror", "variant", "components", "user"):
            if key in values:
                raise UserError(f"{where}: {key!r} comes from {extends}.toml, which it extends; remove it.")
        own = _names(values, "packages", where, _PACKAGE_RE)
        description = values.get("description", "")
        if not isinstance(description, str):
            raise UserError(f"{where}: 'description' must be a string.")
        return StackDefinition(
            name=name, suite=base.suite, mirror=base.mirror,
            packages=base.packages + tuple(p for p in own if p not in base.packages),
            variant=base.variant, components=base.components, description=description, user=base.user,
            extends=extends)
    suite = _string(values, "suite", where)
    if not _SUITE_RE.match(suite):
        raise UserError(f"{where}: 'suite' must be a Debian suite name such as 'trixie'.")
    variant = _string(values, "variant", where, "minbase")
    if variant not in _VARIANTS:
        raise UserError(f"{where}: 'variant' must be one of {', '.join(_VARIANTS)}.")
    mirror = _string(values, "mirror", where)
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", mirror):
        raise UserError(f"{where}: 'mirror' must be an http:// or https:// URL.")
    user_values = values.get("user", {})
    if not isinstance(user_values, dict):
        raise UserError(f"{where}: [user] must be a table.")
    unknown = sorted(set(user_values) - {"name", "home", "shell"})
    if unknown:
        raise UserError(f"{where}: [user] has unknown key {unknown[0]!r}; known: home, name, shell.")
    defaults = StackUser()
    user = StackUser(
        name=_string(user_values, "name", f"{where} [user]", defaults.name),
        home=_string(user_values, "home", f"{where} [user]", defaults.home),
        shell=_string(user_values, "shell", f"{where} [user]", defaults.shell),
    )
    if not _ACCOUNT_RE.match(user.name):
        raise UserError(f"{where}: [user] name {user.name!r} is not a valid account name.")
    for key in ("home", "shell"):
        path = getattr(user, key)
        if not path.startswith("/") or ".." in path.split("/") or ":" in path:
            raise UserError(f"{where}: [user] {key} must be an absolute path without '..' or ':'.")
    description = values.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"{where}: 'description' must be a string.")
    return StackDefinition(
        name=name,
        suite=suite,
        mirror=mirror.rstrip("/"),
        packages=_names(values, "packages", where, _PACKAGE_RE),
        variant=variant,
        components=_names(values, "components", where, _COMPONENT_RE, ["main"]),
        description=description,
        user=user,
    )


def definition_hash(definition: StackDefinition, uid: int, gid: int) -> str:
    """sha256 of everything that shapes the built tree. The description is left out: it changes
    no file, so rewording it must not cost a rebuild."""
    shaped = asdict(definition)
    del shaped["description"]
    if not shaped["extends"]:  # absent from stacks that extend none: their hashes stay as they were
        del shaped["extends"]
    shaped.update(uid=uid, gid=gid, builder=BUILDER_VERSION)
    return hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()



def stack_key(definition: StackDefinition, uid: int, gid: int) -> tuple[str, str]:
    """(digest, directory name) of the tree ``definition`` builds to: ``<name>-<hash12>``."""
    digest = definition_hash(definition, uid, gid)
    return digest, f"{definition.name}-{digest[:12]}"
