"""How dynoctl prints: Heroku CLI's layouts (``=== header``, aligned ``Key: value``, times with
``(~ 5m ago)``), as pure functions of data so their tests need no server.
"""

from __future__ import annotations

from datetime import UTC, datetime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import tzinfo


def header(text: str) -> str:
    return f"=== {text}"


def parse_time(value: str) -> datetime:
    """An RFC 3339 time from the API; naive ones are UTC, as the API promises."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def time_ago(value: str | None, now: float, tz: tzinfo | None = None) -> str:
    """``2026/11/26 12:00:00 +0000 (~ 5m ago)``, as Heroku's ps and releases print times.

    Heroku drops the "ago" part past a day; seconds up to a minute, minutes up to an hour.
    """
    if not value:
        return ""
    moment = parse_time(value).astimezone(tz)
    text = moment.strftime("%Y/%m/%d %H:%M:%S %z")
    elapsed = max(0, int(now - moment.timestamp()))
    if elapsed <= 60:
        return f"{text} (~ {elapsed}s ago)"
    if elapsed <= 60 * 60:
        return f"{text} (~ {elapsed // 60}m ago)"
    if elapsed <= 25 * 60 * 60:
        return f"{text} (~ {elapsed // 3600}h ago)"
    return text


def key_values(pairs: Iterable[tuple[str, object]]) -> list[str]:
    """``Key:   value`` lines with the values aligned, as Heroku prints info and config vars."""
    items = [(f"{key}:", "" if value is None else str(value)) for key, value in pairs]
    width = max((len(key) for key, _ in items), default=0)
    return [f"{key:<{width}} {value}".rstrip() for key, value in items]


def table(headings: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Columns padded to their widest cell, a dashed rule under the headings."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headings)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(row)).rstrip()

    return [line(headings), line(["-" * w for w in widths])] + [line(row) for row in cells]


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
