"""redis:info and redis:cli: an app's heroku-redis add-ons (docs/addons.md). redis:cli sends each
command through dynod, which runs it on the add-on over its unix socket: no client is needed in
the app's stack, and the add-on's port stays closed to anything but the app's dynos."""

from __future__ import annotations

import json
import shlex

from ..errors import UserError
from .command import Context
from .output import header


def info(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("redis:info", "Show the app's Redis add-ons.")
    parser.add_argument("database", nargs="?", metavar="REDIS")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    client = ctx.client()
    found = [a for a in client.list_addons(app) if a["addon_service"]["name"] == "heroku-redis"
             and (args.database is None or args.database in (a["name"], *[t["name"] for t in a["attachments"]]))]
    if not found:
        raise UserError(f"{app} has no Redis add-on{'' if args.database is None else ' ' + args.database}.")
    for addon in found:
        detail = client.get_addon(addon["name"], app)
        ctx.out(header(f"{addon['name']} ({', '.join(addon['config_vars'])})"))
        rows = [tuple(pair) for pair in detail.get("info", [])]
        width = max(len(k) for k, _ in rows) + 1
        for key, value in rows:
            ctx.out(f"{key + ':':<{width}} {value}")
    return 0


def _show(result: object) -> str:
    if isinstance(result, dict) and set(result) == {"error"}:
        return f"(error) {result['error']}"
    if result is None or result is False:
        return "(nil)"
    if result is True:  # redis-py turns a status reply like SET's OK into True
        return "OK"
    if isinstance(result, str):
        return f'"{result}"' if result not in ("OK", "PONG") else result
    if isinstance(result, list):
        return "\n".join(f"{i}) {_show(v)}" for i, v in enumerate(result, 1)) or "(empty array)"
    return json.dumps(result) if isinstance(result, dict) else f"(integer) {result}" if isinstance(result, int) \
        else str(result)


def cli(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("redis:cli", "Run Redis commands: redis:cli [REDIS] [-c 'COMMAND'] (else one per line).")
    parser.add_argument("database", nargs="?", metavar="REDIS")
    parser.add_argument("-c", "--command", action="append", default=[], help="a command to run (repeatable)")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    client = ctx.client()
    commands = args.command
    interactive = not commands
    while True:
        if interactive:
            ctx.stderr.write(f"{app}> ")
            ctx.stderr.flush()
            line = ctx.stdin.readline()
            if not line:
                return 0
        else:
            if not commands:
                return 0
            line = commands.pop(0)
        try:
            words = shlex.split(line)
        except ValueError as exc:
            ctx.out(f"(error) {exc}")
            continue
        if not words:
            continue
        if words[0].lower() in ("quit", "exit"):
            return 0
        ctx.out(_show(client.redis_command(app, words, args.database)["result"]))
