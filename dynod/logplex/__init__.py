"""The log stream (Heroku's Logplex): per-app rings, tails and drains, and the line formats.

The daemon creates one ``LogStream`` over settings.logs_dir, runs ``LogStream.run`` in its
nursery, hands every dyno's output pipe to ``pump`` and platform events to ``emit``.
"""

from .drain import parse_drain_url
from .format import MAX_LINE_BYTES, LineFilter, timestamp
from .metrics import format_sample, r14_line, r15_line
from .stream import LogStream

__all__ = [
    "MAX_LINE_BYTES",
    "LineFilter",
    "LogStream",
    "format_sample",
    "parse_drain_url",
    "r14_line",
    "r15_line",
    "timestamp",
]
