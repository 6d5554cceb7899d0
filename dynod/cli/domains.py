"""domains, domains:add HOST, domains:remove HOST: the hostnames the router sends to an app."""

from __future__ import annotations

from .command import Context
from .output import header


def show(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("domains", "List the hostnames routed to an app."), argv)
    app = ctx.app(args)
    domains = ctx.client().list_domains(app)
    ctx.out(header(f"{app} Heroku Domain"))
    for domain in domains:
        if domain["kind"] != "custom":
            ctx.out(domain["hostname"])
    custom = [d["hostname"] for d in domains if d["kind"] == "custom"]
    if custom:
        ctx.out("")
        ctx.out(header(f"{app} Custom Domains"))
        for hostname in custom:
            ctx.out(hostname)
    return 0


def add(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("domains:add", "Route a custom hostname to an app.")
    parser.add_argument("hostname")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"Adding {args.hostname} to {app}... ")
    ctx.client().add_domain(app, args.hostname)
    ctx.out("done")
    return 0


def remove(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("domains:remove", "Stop routing a custom hostname to an app.")
    parser.add_argument("hostname")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"Removing {args.hostname} from {app}... ")
    ctx.client().remove_domain(app, args.hostname)
    ctx.out("done")
    return 0
