"""config, config:get, config:set, config:unset. Every change makes a new release."""

from __future__ import annotations

from ..errors import UserError
from .command import Context
from .output import header, key_values


def parse_assignments(words: list[str]) -> dict[str, str]:
    """``KEY=value`` words -> {KEY: value}; the value may be empty or contain '='."""
    if not words:
        raise UserError("Usage: dynoctl config:set KEY=value [KEY=value ...]; give at least one.")
    from ..model import check_config_var_name  # only config:set pays for importing the model

    changes: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep:
            raise UserError(f"{word!r} is not KEY=value: write it as {word}=value.")
        changes[check_config_var_name(name)] = value
    return changes


def show(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("config", "Show an app's config vars.")
    parser.add_argument("-s", "--shell", action="store_true", help="print KEY=value lines for a shell")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    config = ctx.client().get_config(app)
    if args.shell:
        import shlex

        for name in sorted(config):
            ctx.out(f"{name}={shlex.quote(config[name])}")
        return 0
    ctx.out(header(f"{app} Config Vars"))
    for line in key_values((name, config[name]) for name in sorted(config)):
        ctx.out(line)
    return 0


def get(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("config:get", "Print one config var's value.")
    parser.add_argument("key")
    args = ctx.parse(parser, argv)
    config = ctx.client().get_config(ctx.app(args))
    # Heroku prints an empty line for an unset var, so scripts can use $(dynoctl config:get X).
    ctx.out(config.get(args.key, ""))
    return 0


def set_vars(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("config:set", "Set config vars and restart the app's dynos on a new release.")
    parser.add_argument("assignments", nargs="*", metavar="KEY=value")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    changes = parse_assignments(args.assignments)
    ctx.progress(f"Setting {', '.join(changes)} and restarting {app}... ")
    client = ctx.client()
    config = client.update_config(app, dict(changes))
    release = client.get_release(app)
    ctx.out(f"done, v{release['version']}")
    for line in key_values((name, config.get(name, "")) for name in changes):
        ctx.out(line)
    return 0


def unset(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("config:unset", "Remove config vars and restart the app's dynos on a new release.")
    parser.add_argument("keys", nargs="+", metavar="KEY")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"Unsetting {', '.join(args.keys)} and restarting {app}... ")
    client = ctx.client()
    client.update_config(app, dict.fromkeys(args.keys))
    ctx.out(f"done, v{client.get_release(app)['version']}")
    return 0
