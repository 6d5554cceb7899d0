"""Heroku Metrics for dynod: response times, throughput, errors, memory and events per app and
process type, from the platform's own log lines, kept in a bounded SQLite file (docs/metrics.md)."""

from .collector import Metrics, parse_since
from .histogram import RELATIVE_ERROR, Histogram
from .point import Point

__all__ = ["RELATIVE_ERROR", "Histogram", "Metrics", "Point", "parse_since"]
