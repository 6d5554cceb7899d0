"""drains, drains:add URL, drains:remove URL: where else an app's logs go."""

from __future__ import annotations

from .command import Context
from .output import header


def show(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("drains", "List an app's log drains."), argv)
    app = ctx.app(args)
    drains = ctx.client().list_drains(app)
    if not drains:
        ctx.out(f"{app} has no drains.")
        return 0
    ctx.out(header("Drains"))
    for drain in drains:
        ctx.out(f"{drain['url']} ({drain['token']})")
    return 0


def add(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("drains:add", "Send an app's logs to syslog://, syslog+tls:// or https:// too.")
    parser.add_argument("url")
    args = ctx.parse(parser, argv)
    drain = ctx.client().add_drain(ctx.app(args), args.url)
    ctx.out(f"Successfully added drain {drain['url']}")
    return 0


def remove(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("drains:remove", "Stop sending an app's logs to a drain.")
    parser.add_argument("url", metavar="URL|ID")
    args = ctx.parse(parser, argv)
    ctx.client().remove_drain(ctx.app(args), args.url)
    ctx.out(f"Successfully removed drain {args.url}")
    return 0
