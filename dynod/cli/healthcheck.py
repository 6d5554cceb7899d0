"""healthcheck, healthcheck:set, healthcheck:remove: the app's HTTP check of its web dynos.

A dynod addition (Heroku checks only that $PORT accepts): a booting web dyno joins the routes once
GET PATH answers STATUS, and a dyno that fails it FAILURES times in a row is ejected and replaced.
"""

from __future__ import annotations

from typing import Any

from .command import Context
from .output import header


def show(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("healthcheck", "Show the app's web health check."), argv)
    app = ctx.app(args)
    check = ctx.client().get_health_check(app)
    if not check["enabled"]:
        ctx.out(f"No health check on {app}: web dynos are routed once $PORT accepts (healthcheck:set to add one).")
        return 0
    ctx.out(header(f"Health check of {app}"))
    ctx.out(f"GET {check['path']} must answer {check['status']} within {check['timeout']:g} s; "
            f"probed every {check['interval']:g} s; ejected after {check['failures']} failures in a row")
    return 0


def set_check(ctx: Context, argv: list[str]) -> int:
    from ..manager.health import LIMITS, HealthCheck

    parser = ctx.parser("healthcheck:set", "Check web dynos over HTTP: healthcheck:set --path /health.")
    parser.add_argument("--path", default="/", help="the path to GET (default /)")
    for name, (default, low, high) in LIMITS.items():
        kind = int if name in ("status", "failures") else float
        parser.add_argument(f"--{name}", type=kind, default=default, help=f"{low:g} to {high:g} (default {default:g})")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    body: dict[str, Any] = {"path": args.path, **{name: getattr(args, name) for name in LIMITS}}
    HealthCheck.from_json(body)  # bad settings cost no request
    ctx.progress(f"Setting the health check of {app}... ")
    ctx.client().set_health_check(app, body)
    ctx.out("done")
    return 0


def remove(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("healthcheck:remove", "Remove the app's web health check."), argv)
    app = ctx.app(args)
    ctx.progress(f"Removing the health check of {app}... ")
    ctx.client().remove_health_check(app)
    ctx.out("done")
    return 0
