"""The Platform API's list pagination: ``Range`` in, a page, and ``Next-Range`` when more remain.

Heroku's grammar: ``<field> [<start>]..[<end>][; max=<n>][, order=asc|desc]`` where ``]start``
makes the start exclusive (that is what a ``Next-Range`` hands back); clients write the options
with ``,`` or ``;`` between them (heroku3 sends ``version ..; order=desc,max=10;``). A page holds
200 items unless ``max`` says otherwise, 1000 at most. A list with more than one page answers 206
Partial Content and ``Next-Range``; a malformed header or an unknown field is a 416
``requested_range_not_satisfiable`` naming what is wrong. Sans I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

DEFAULT_MAX = 200
LIMIT_MAX = 1000
MAX_HEADER = 512
_HEAD = re.compile(r"\s*([a-z_]{1,32})\s*(\]?)([^.;\s]{0,256})\s*\.\.\s*([^.;\s]{0,256})\s*")


@dataclass(frozen=True, slots=True)
class Range:
    field: str
    start: str | None
    start_exclusive: bool
    end: str | None
    max: int
    order: str  # "asc" | "desc"


def bad_range(message: str) -> UserError:
    return UserError(message, status=416, code="requested_range_not_satisfiable")


def parse_range(header: str | None, fields: Sequence[str]) -> Range:
    """The Range a client asked for over a list sortable by ``fields`` (the first is the default)."""
    if header is None or not header.strip():
        return Range(fields[0], None, False, None, DEFAULT_MAX, "asc")
    if len(header) > MAX_HEADER:
        raise bad_range(f"The Range header is over {MAX_HEADER} characters.")
    head, _, options = header.partition(";")
    match = _HEAD.fullmatch(head)
    if match is None:
        raise bad_range(f"Invalid Range header {header[:80]!r}: use e.g. 'id ..; max=200' "
                        "or 'version ]10..; max=10, order=desc'.")
    field, exclusive, start, end = match.groups()
    if field not in fields:
        raise bad_range(f"This list cannot be ranged by {field!r}: use {' or '.join(fields)}.")
    size, order = DEFAULT_MAX, "asc"
    for option in re.split(r"[;,]", options):
        if not option.strip():
            continue
        key, eq, value = (part.strip() for part in option.partition("="))
        if key == "max" and eq and re.fullmatch(r"[0-9]{1,4}", value) and 1 <= int(value) <= LIMIT_MAX:
            size = int(value)
        elif key == "order" and value in ("asc", "desc"):
            order = value
        else:
            raise bad_range(f"Invalid Range option {option.strip()[:40]!r}: use max=1..{LIMIT_MAX} and "
                            "order=asc or order=desc.")
    return Range(field, start or None, bool(exclusive), end or None, size, order)


def _key(value: Any) -> tuple[int, Any]:
    # Numbers sort as numbers ("10" after "9"), everything else as text; None first.
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    text = str(value)
    return (1, int(text)) if text.isascii() and text.isdigit() else (2, text)


def paginate(items: list[dict[str, Any]], wanted: Range) -> tuple[list[dict[str, Any]], str | None]:
    """The page ``wanted`` names, and the ``Next-Range`` header value when more follow it."""
    ordered = sorted(items, key=lambda item: _key(item.get(wanted.field)), reverse=wanted.order == "desc")
    descending = wanted.order == "desc"

    def after_start(item: dict[str, Any]) -> bool:
        if wanted.start is None:
            return True
        here, start = _key(item.get(wanted.field)), _key(wanted.start)
        if wanted.start_exclusive:
            return here < start if descending else here > start
        return here <= start if descending else here >= start

    def before_end(item: dict[str, Any]) -> bool:
        if wanted.end is None:
            return True
        here, end = _key(item.get(wanted.field)), _key(wanted.end)
        return here >= end if descending else here <= end

    selected = [item for item in ordered if after_start(item) and before_end(item)]
    page = selected[:wanted.max]
    if len(selected) <= wanted.max:
        return page, None
    last = page[-1].get(wanted.field)
    return page, f"{wanted.field} ]{last}..; max={wanted.max}, order={wanted.order}"
