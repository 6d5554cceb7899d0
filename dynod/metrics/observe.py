"""What a platform log line says for metrics: router requests, runtime samples, dyno and app events.

Heroku derives its Metrics from the same lines its Logplex carries (the router's access lines and
log-runtime-metrics samples); dynod does the same, so the figures a user charts are exactly the
ones in `dynoctl logs`. Sans I/O: ``observe(source, dyno, message)`` turns one message into at most
one observation, or None for everything else (an app's own output is never parsed).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# key=value or key="quoted \"value\"" as the router writes them (router/logline.py)
_FIELD = re.compile(r'([a-z_#0-9]+)=("(?:[^"\\]|\\.)*"|\S*)')
_MB = 1024 * 1024
_ROUTER_LINE = re.compile(r'at=(info|error) (?:code=([A-Z][0-9]{1,3}) )?.* dyno=(\S*) connect=\S* '
                          r'service=(?:(\d+)ms)? status=(\d{3}) bytes=\S* protocol=\S+')
_RELEASE = re.compile(r"Release v(\d+) created(?: by [^:]+)?: (.*)")
_SCALED = re.compile(r"Scaled (\S+) to (\d+)")
_STATE = re.compile(r"State changed from (\S+) to (\S+)")
_DYNO_ERROR = re.compile(r"Error (R\d\d) ")
_DYNO_NAME = re.compile(r"([A-Za-z0-9_-]+)\.\d+")


@dataclass(frozen=True, slots=True)
class RouterRequest:
    type: str  # the process type that served it ("web": only web dynos get HTTP)
    status: int
    service_ms: float | None  # None when no dyno answered (H10, H14, ...)
    code: str | None  # H12, H13, ... or None for at=info


@dataclass(frozen=True, slots=True)
class RuntimeSample:
    type: str
    dyno: str  # web.1
    rss: float  # bytes
    swap: float
    total: float
    quota: float
    load_1m: float | None


@dataclass(frozen=True, slots=True)
class RuntimeLoad:
    """Heroku's load line, which comes just before its dyno's memory line (the collector joins
    the two into one RuntimeSample)."""
    type: str
    dyno: str
    load_1m: float


@dataclass(frozen=True, slots=True)
class DynoChange:
    type: str
    dyno: str
    kind: str  # "crash" | "restart"
    cause: str = ""  # a restart's: "requested" (ps:restart), "cycling" (daily), "crash" (the restart policy)


@dataclass(frozen=True, slots=True)
class AppEvent:
    kind: str  # "deploy" | "config" | "rollback" | "release" | "scale" | "restart"
    text: str
    type: str | None = None  # the process type it concerns, when one


@dataclass(frozen=True, slots=True)
class DynoError:
    type: str
    dyno: str
    code: str  # R10, R14, R15, ...


Observation = RouterRequest | RuntimeSample | RuntimeLoad | DynoChange | DynoError | AppEvent


def process_type(dyno: str) -> str | None:
    match = _DYNO_NAME.fullmatch(dyno)
    return match.group(1) if match else None


def fields(message: str) -> dict[str, str]:
    return {key: value[1:-1] if value.startswith('"') else value for key, value in _FIELD.findall(message)}


def _mb(text: str | None) -> float | None:
    if not text or not text.endswith("MB"):
        return None
    try:
        return float(text[:-2]) * _MB
    except ValueError:
        return None


def _router(message: str) -> RouterRequest | None:
    # One anchored match instead of splitting every field: this runs for every request. The
    # fields after the quoted path and fwd are the router's own and come last, so the greedy
    # ".*" lands on the real ones even if a client's X-Forwarded-For spells out fake ones.
    match = _ROUTER_LINE.fullmatch(message)
    if match is None:
        return None
    at, code, dyno, service, status = match.groups()
    return RouterRequest(type=process_type(dyno) or "web", status=int(status),
                         service_ms=float(service) if service else None, code=code if at == "error" else None)


def _load(value: str | None) -> float | None:
    try:
        load = float(value) if value is not None else None
    except ValueError:
        return None
    return load if load is not None and math.isfinite(load) and load >= 0 else None


def _sample(dyno: str, message: str) -> RuntimeSample | RuntimeLoad | None:
    found = fields(message)
    if "sample#memory_rss" not in found:
        # The load line alone; Heroku writes it first, the memory line follows.
        name = found.get("source", dyno)
        kind = process_type(name)
        load_1m = _load(found.get("sample#load_avg_1m"))
        return RuntimeLoad(kind, name, load_1m) if kind is not None and load_1m is not None else None
    rss, swap, quota = (_mb(found.get(f"sample#memory_{k}")) for k in ("rss", "swap", "quota"))
    if rss is None or swap is None or quota is None or not quota > 0:
        return None
    total = _mb(found.get("sample#memory_total"))
    name = found.get("source", dyno)
    kind = process_type(name)
    if kind is None:
        return None
    return RuntimeSample(type=kind, dyno=name, rss=rss, swap=swap, total=total if total is not None else rss + swap,
                         quota=quota, load_1m=_load(found.get("sample#load_avg_1m")))


def _release_event(message: str) -> AppEvent | None:
    match = _RELEASE.fullmatch(message)
    if match is None:
        return None
    version, description = match.groups()
    if description.startswith("Deploy"):
        kind = "deploy"
    elif description.startswith("Rollback"):
        kind = "rollback"
    elif "config var" in description:
        kind = "config"
    else:
        kind = "release"
    return AppEvent(kind, f"v{version}: {description}")


def observe(source: str, dyno: str, message: str) -> Observation | None:
    """One platform message (``source`` "dynod") as an observation, or None."""
    if source != "dynod":
        return None
    if dyno == "router":
        return _router(message)
    if dyno == "api":
        if message.startswith("Release v"):
            return _release_event(message)
        if (scaled := _SCALED.match(message)) is not None:
            return AppEvent("scale", message.removesuffix(" by dynoctl"), type=scaled.group(1))
        return None
    kind = process_type(dyno)
    if kind is None:
        return None
    if message.startswith("source="):
        return _sample(dyno, message)
    if message == "Restarting":
        return DynoChange(kind, dyno, "restart", "requested")
    if message == "Cycling":
        return DynoChange(kind, dyno, "restart", "cycling")
    # R14/R15 come after their "Process running mem=..." line, in the same message
    if (error := _DYNO_ERROR.search(message)) is not None:
        return DynoError(kind, dyno, error.group(1))
    if (state := _STATE.fullmatch(message)) is not None:
        old, new = state.groups()
        if new == "crashed":
            return DynoChange(kind, dyno, "crash")
        if old == "crashed" and new == "starting":
            return DynoChange(kind, dyno, "restart", "crash")  # the restart policy bringing it back
    return None
