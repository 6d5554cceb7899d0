"""A job's cadence: Heroku Scheduler's frequencies, or a 5-field cron expression. Sans I/O.

Heroku Scheduler offers "every 10 minutes", "every hour at :MM" and "every day at HH:MM" (UTC);
dynod takes those words and any standard 5-field cron line (minute hour day month weekday, UTC)
for the cases they do not cover. Every cadence becomes a cron expression, so one iterator
(croniter) answers "the slot after t" and "the latest slot at or before t" for all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import croniter

from ..errors import UserError

MAX_CADENCE_CHARS = 100

_EVERY_MINUTES = re.compile(r"every\s+(\d{1,2})\s+minutes?")
_HOURLY = re.compile(r"(?:hourly|every\s+hour)(?:\s+at\s+:?(\d{1,2}))?")
_DAILY = re.compile(r"(?:daily|every\s+day)\s+at\s+(\d{1,2}):(\d{2})(?:\s*utc)?")
_CRON_FIELD = re.compile(r"[0-9*/,\-A-Za-z]+")

HELP = ('use "every 10 minutes", "every hour at :30", "every day at 04:30" (UTC), or a 5-field cron '
        'line like "*/15 * * * *"')


@dataclass(frozen=True, slots=True)
class Cadence:
    text: str  # as the user wrote it, normalised (lower case, single spaces)
    cron: str  # the 5-field cron expression it means, in UTC

    def next_after(self, t: float) -> float:
        """The first slot strictly after ``t`` (seconds since the epoch)."""
        return float(croniter(self.cron, datetime.fromtimestamp(t, UTC)).get_next(float))

    def latest_at_or_before(self, t: float) -> float:
        """The last slot at or before ``t``."""
        # croniter's get_prev is strictly before its start: start just after t so a slot at
        # exactly t counts as due.
        return float(croniter(self.cron, datetime.fromtimestamp(t + 0.001, UTC)).get_prev(float))


def parse_cadence(text: str) -> Cadence:
    """The cadence ``text`` names, or a UserError saying what is accepted."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"No schedule given: {HELP}.")
    if len(text) > MAX_CADENCE_CHARS or "\x00" in text:
        raise UserError(f"The schedule is over {MAX_CADENCE_CHARS} characters: {HELP}.")
    words = " ".join(text.lower().split())
    if match := _EVERY_MINUTES.fullmatch(words):
        minutes = int(match.group(1))
        if minutes not in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30):
            raise UserError(f"Invalid schedule {text!r}: every N minutes needs N to divide an hour evenly "
                            "(1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30); for others use a cron line.")
        return Cadence(words, f"*/{minutes} * * * *")
    if match := _HOURLY.fullmatch(words):
        minute = int(match.group(1) or 0)
        if minute > 59:
            raise UserError(f"Invalid schedule {text!r}: the minute past the hour must be from :00 to :59.")
        return Cadence(words, f"{minute} * * * *")
    if match := _DAILY.fullmatch(words):
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            raise UserError(f"Invalid schedule {text!r}: the time of day must be from 00:00 to 23:59 (UTC).")
        return Cadence(words, f"{minute} {hour} * * *")
    fields = words.split(" ")
    if len(fields) == 5 and all(_CRON_FIELD.fullmatch(f) for f in fields):
        try:
            valid = croniter.is_valid(words)
            if valid:
                croniter(words).get_next(float)  # some expressions parse but never fire (Feb 30)
        except (ValueError, KeyError, OverflowError, RecursionError):  # croniter's own errors are ValueErrors
            valid = False
        if valid:
            return Cadence(words, words)
        raise UserError(f"Invalid cron schedule {text!r}: five fields (minute hour day month weekday, UTC) "
                        f"with values in range; {HELP}.")
    raise UserError(f"Unknown schedule {text[:60]!r}: {HELP}.")
