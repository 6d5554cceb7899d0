"""Procfile parsing, sans I/O: text in, process types out."""

from __future__ import annotations

import re

from .errors import UserError

# Heroku's own rule (from its Procfile parser): name, colon, optional spaces, command.
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def parse_procfile(text: str) -> dict[str, str]:
    """Return {process type: command}. Blank lines and '#' comments are skipped.

    Any other line that does not match is an error naming its line number, because a silently
    dropped process type is a dyno that never starts.
    """
    types: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise UserError(
                f"Malformed Procfile line {number}: {raw.strip()[:80]!r}; "
                "each line must read 'type: command' with a type of letters, digits, '_' or '-'."
            )
        name, command = match.group(1), match.group(2).strip()
        if name in types:
            raise UserError(f"Procfile line {number}: process type {name!r} is defined twice.")
        types[name] = command
    return types
