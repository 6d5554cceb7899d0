"""The dashboard's static files, read from the package's data: no build step, no network."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from ..errors import NotFound

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Names the package ships, nothing else: no "..", no absolute paths, no other extensions.
_NAME = re.compile(r"(?:vendor/uplot/)?[a-zA-Z0-9_.-]+\.(?:html|js|css|svg)")


@cache
def asset(name: str) -> tuple[str, str]:
    """(content type, text) of a shipped file; NotFound for anything else."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise NotFound(f"No dashboard file {name[:80]!r}.")
    path = resources.files(__package__).joinpath("static", *name.split("/"))
    if not path.is_file():
        raise NotFound(f"No dashboard file {name[:80]!r}.")
    suffix = name[name.rindex("."):]
    return _TYPES[suffix], path.read_text(encoding="utf-8")
