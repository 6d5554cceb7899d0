"""metrics [--type web] [--since 1h]: Heroku Metrics in the terminal; dashboard: its web address."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .command import Context
from .output import header, table

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60
MiB = 1024 * 1024


def sparkline(values: Sequence[float | None], width: int = SPARK_WIDTH) -> str:
    """Values as block characters, each column the largest value of its share of points; a
    column without any value is a space (no data, not zero)."""
    if not values:
        return ""
    count = min(len(values), width)
    columns: list[float | None] = []
    for i in range(count):
        chunk = [v for v in values[i * len(values) // count:(i + 1) * len(values) // count] if v is not None]
        columns.append(max(chunk) if chunk else None)
    known = [v for v in columns if v is not None]
    if not known:
        return " " * len(columns)
    top = max(known)
    if top <= 0:
        return "".join(" " if v is None else SPARKS[0] for v in columns)
    return "".join(" " if v is None else SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))]
                   for v in columns)


def _ms(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.0f}ms{suffix}"


def _mb(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value / MiB:.1f}MB{suffix}"


def _series(points: list[dict[str, Any]], pick: Callable[[dict[str, Any]], float | None]) -> list[float | None]:
    return [pick(p) for p in points]


def _peak(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _memory(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda p: None if p["memory"] is None else p["memory"][key]


def format_metrics(data: dict[str, Any], since_text: str, tz: Any = None) -> list[str]:
    points: list[dict[str, Any]] = data["points"]
    step = data["step"]
    resolution = "1-minute" if step == 60 else f"{step // 60}-minute"
    lines = [header(f"{data['app']} {data['type']} metrics, last {since_text} ({resolution} points; "
                    f"percentiles within ±{data['percentile_error'] * 100:.1f}%)")]
    if len(data.get("types") or []) > 1:
        lines.append(f"Process types: {', '.join(data['types'])} (--type to pick one)")
    requests = sum(p["requests"] for p in points)
    status = {k: sum(p["status"][k] for p in points) for k in ("2xx", "3xx", "4xx", "5xx")}
    errors: dict[str, int] = {}
    for p in points:
        for code, n in p["errors"].items():
            errors[code] = errors.get(code, 0) + n
    p50 = _series(points, lambda p: p["response_ms"]["p50"])
    p95 = _series(points, lambda p: p["response_ms"]["p95"])
    p99 = _series(points, lambda p: p["response_ms"]["p99"])
    peak = _series(points, lambda p: p["response_ms"]["max"])
    rss = _series(points, _memory("rss_max"))
    quota_pct = _series(points, _memory("quota_pct_max"))
    swap = _series(points, _memory("swap_max"))
    load = _series(points, lambda p: None if p["load"] is None else p["load"]["max"])
    rows = [
        ("Response p50", _ms(_peak(p50), " peak"), sparkline(p50)),
        ("Response p95", _ms(_peak(p95), " peak"), sparkline(p95)),
        ("Response p99", _ms(_peak(p99), " peak"), sparkline(p99)),
        ("Response max", _ms(_peak(peak)), sparkline(peak)),
        ("Throughput", f"{requests} requests", sparkline([float(p["requests"]) for p in points])),
        ("  2xx/3xx", f"{status['2xx']}/{status['3xx']}",
         sparkline([float(p["status"]["2xx"] + p["status"]["3xx"]) for p in points])),
        ("  4xx/5xx", f"{status['4xx']}/{status['5xx']}",
         sparkline([float(p["status"]["4xx"] + p["status"]["5xx"]) for p in points])),
        ("Errors", ", ".join(f"{c} {n}" for c, n in sorted(errors.items())) or "none",
         sparkline([float(sum(p["errors"].values())) for p in points])),
        ("Memory RSS", _mb(_peak(rss), " peak"), sparkline(rss)),
        ("Memory swap", _mb(_peak(swap), " peak"), sparkline(swap)),
        ("Memory quota", "-" if _peak(quota_pct) is None else f"{_peak(quota_pct):.1f}% peak", sparkline(quota_pct)),
        ("Dyno load", "-" if _peak(load) is None else f"{_peak(load):.2f} peak", sparkline(load)),
        ("Restarts", str(sum(p["restarts"] for p in points)), sparkline([float(p["restarts"]) for p in points])),
        ("Crashes", str(sum(p["crashes"] for p in points)), sparkline([float(p["crashes"]) for p in points])),
    ]
    lines += table(("Metric", "Value", "Over time"), rows)
    events = data.get("events") or []
    if events:
        lines += ["", header("Events")]
        for event in events[-20:]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["at"]))
            lines.append(f"{when}  {event['kind']:<8}  {event['text']}")
    return lines


def show(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("metrics", "Response times, throughput, errors, memory and events of an app.")
    parser.add_argument("--type", "-t", default="web", help="process type (default web)")
    parser.add_argument("--since", "-s", default="1h", help="window: 30m, 1h, 24h, 7d (default 1h)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    data = ctx.client().get_metrics(app, args.type, args.since)
    if args.json:
        import json

        ctx.out(json.dumps(data, indent=2))
        return 0
    for line in format_metrics(data, args.since):
        ctx.out(line)
    return 0


def dashboard(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("dashboard", "Print the web dashboard's address, with its login token.",
                                app=False), argv)
    del args
    ctx.out(ctx.client().dashboard_url())
    return 0
