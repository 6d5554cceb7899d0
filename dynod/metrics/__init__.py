"""Heroku Metrics for dynod: response times, throughput, errors, memory and events per app and
process type, from the platform's own log lines, kept in a bounded SQLite file (docs/metrics.md).

Each public name is imported from its module on first use (dynod/exports.py), so importing one
module of the package never loads the others.
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "Metrics": "collector",
    "parse_since": "collector",
    "RELATIVE_ERROR": "histogram",
    "Histogram": "histogram",
    "Point": "point",
    "DynoMemory": "point",
    "MetricsStore": "store",
}, globals())
