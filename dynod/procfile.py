"""Procfile parsing, sans I/O: text in, process types out."""

from __future__ import annotations

import re

from .errors import UserError

# Heroku's own rule (from its Procfile parser): name, colon, optional spaces, command.
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
# dynod's own bounds (Heroku documents none): each type is a formation row and a route-table
# entry, and each command travels in one message to the spawner, so neither may grow unbounded.
MAX_PROCESS_TYPES = 100
MAX_TYPE_NAME = 63
MAX_COMMAND_BYTES = 8192


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
        if len(name) > MAX_TYPE_NAME:
            raise UserError(f"Procfile line {number}: the process type name is over {MAX_TYPE_NAME} "
                            "characters; use a shorter one.")
        if len(command.encode()) > MAX_COMMAND_BYTES:
            raise UserError(f"Procfile line {number}: the command of {name!r} is over {MAX_COMMAND_BYTES} "
                            "bytes; put it in a script in the app and run that.")
        if "\x00" in command:
            raise UserError(f"Procfile line {number}: the command of {name!r} contains a NUL character.")
        if len(types) == MAX_PROCESS_TYPES:
            raise UserError(f"The Procfile declares more than {MAX_PROCESS_TYPES} process types; "
                            "dynod runs at most that many per app.")
        types[name] = command
    return types
