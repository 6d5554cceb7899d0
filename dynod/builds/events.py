"""What a build reports while it runs, as the API streams it: one JSON object per line (ndjson).

``POST /apps/{app}/builds`` answers 200 and then sends, in order:

- ``BuildOutput``: one line the build printed, ``{"line": "-----> Python app detected"}``;
- then exactly one of ``BuildFinished`` (``{"build": record}``: the build record as
  ``dynoctl builds`` shows it, plus ``web_url``; its ``status`` says whether it succeeded) or
  ``BuildFailed`` (``{"error": {"id": ..., "message": ...}}``: dynod could not run the build at
  all, the API's error shape).

Each event has one ``encode`` (to the wire line) and the module one ``decode_build_event`` (from
it), so the server, the git pre-receive hook and dynoctl read and write the same shapes. Standard
library only: the hook and dynoctl import it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import UserError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True, slots=True)
class BuildOutput:
    line: str

    def encode(self) -> bytes:
        return _line({"line": self.line})


@dataclass(frozen=True, slots=True)
class BuildFinished:
    status: str  # "succeeded" or "failed" (the build ran and ended so)
    release: int | None = None  # the release it made, when it succeeded
    error: str | None = None  # the one-line reason a failed build failed
    web_url: str | None = None
    record: dict[str, Any] = field(default_factory=dict)  # the whole record, as the API sent it

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def encode(self) -> bytes:
        return _line({"build": {**self.record, "status": self.status, "release": self.release,
                                "error": self.error, "web_url": self.web_url}})


@dataclass(frozen=True, slots=True)
class BuildFailed:
    id: str  # the API's error id ("not_found", "internal_error", ...)
    message: str

    def encode(self) -> bytes:
        return _line({"error": {"id": self.id, "message": self.message}})


BuildEvent = BuildOutput | BuildFinished | BuildFailed


def build_finished(record: dict[str, Any]) -> BuildFinished:
    """The final event of a build that ran, from the record the platform returns."""
    return BuildFinished(status=str(record.get("status")), release=record.get("release"),
                         error=record.get("error"), web_url=record.get("web_url"), record=dict(record))


def decode_build_event(raw: bytes | str) -> BuildEvent:
    """One line of a build stream; a line that is none of the events is a ``UserError`` (a stream
    cut mid-line, or a server that is not dynod)."""
    try:
        message = json.loads(raw)
    except ValueError:
        raise _broken("a line is not JSON") from None
    if not isinstance(message, dict) or len(message) != 1:
        raise _broken("a line is not one event")
    (kind, value), = message.items()
    if kind == "line" and isinstance(value, str):
        return BuildOutput(value)
    if kind == "build" and isinstance(value, dict) and isinstance(value.get("status"), str):
        release = value.get("release")
        if release is not None and (not isinstance(release, int) or isinstance(release, bool)):
            raise _broken("the build's release is not a version number")
        return build_finished(value)
    if kind == "error" and isinstance(value, dict) and isinstance(value.get("message"), str):
        return BuildFailed(id=str(value.get("id", "")), message=value["message"])
    raise _broken(f"an event of an unknown kind ({kind!r})")


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _broken(what: str) -> UserError:
    return UserError(f"The build stream from dynod is broken ({what}); see `dynoctl builds:output`.",
                     status=502, code="stream_broken")
