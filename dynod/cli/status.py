"""status, system:shutdown: the daemon itself."""

from __future__ import annotations

from .command import Context
from .output import header, key_values


def status(ctx: Context, argv: list[str]) -> int:
    ctx.parse(ctx.parser("status", "Show dynod's version, pid and load.", app=False), argv)
    info = ctx.client().status()
    ctx.out(header("dynod"))
    for line in key_values((key.replace("_", " ").capitalize(), value) for key, value in info.items()):
        ctx.out(line)
    return 0


def shutdown(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("system:shutdown", "Stop dynod (and with --stop-dynos every dyno too).", app=False)
    parser.add_argument("--stop-dynos", action="store_true",
                        help="stop every dyno, the spawner and the router as well (uninstalls, tests)")
    args = ctx.parse(parser, argv)
    ctx.progress("Shutting down dynod" + (" and every dyno" if args.stop_dynos else "") + "... ")
    ctx.client().shutdown(args.stop_dynos)
    ctx.out("done")
    return 0
