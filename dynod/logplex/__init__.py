"""The log stream (Heroku's Logplex): per-app rings, tails and drains, and the line formats.

The daemon creates one ``LogStream`` over settings.logs_dir, runs ``LogStream.run`` in its
nursery, hands every dyno's output pipe to ``pump`` and platform events to ``emit``.

- ``format``: a stored log line, parsed and written; ``DynoOutputSplitter`` (a dyno's bytes to
  messages); ``LineFilter`` (``logs --source/--dyno``); pure;
- ``store``: each app's bounded ring of lines on disk; ``stream``: ``LogStream``, the hub;
- ``tail``: one ``logs --tail`` session; ``drain``/``egress``/``sender``/``syslog``: log drains
  (parse, buffer, the drain firewall's egress, RFC 5424 over TCP/TLS);
- ``metrics``: the platform's own lines (``sample#memory_total``, R14, R15).

Each public name is imported from its module on first use (dynod/exports.py): dynoctl reads
lines with ``format`` without loading trio and the stream.
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "MAX_LINE_BYTES": "format",
    "DynoOutputSplitter": "format",
    "LineFilter": "format",
    "line_prefix": "format",
    "parse_line": "format",
    "timestamp": "format",
    "LogStream": "stream",
    "TailSession": "tail",
    "Drain": "drain",
    "parse_drain_url": "drain",
    "DrainEgress": "egress",
    "format_sample": "metrics",
    "r14_line": "metrics",
    "r15_line": "metrics",
}, globals())
