"""features, features:info, features:enable, features:disable: an app's features (preboot), as Heroku's."""

from __future__ import annotations

from .command import Context
from .output import header


def show(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("features", "List the app's features and whether each is on."), argv)
    app = ctx.app(args)
    features = ctx.client().list_features(app)
    ctx.out(header(f"App Features {app}"))
    width = max((len(f["name"]) for f in features), default=0)
    for f in features:
        ctx.out(f"[{'+' if f['enabled'] else ' '}] {f['name']:<{width}}  {f['description']}")
    return 0


def info(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("features:info", "Show one feature: features:info preboot.")
    parser.add_argument("feature")
    args = ctx.parse(parser, argv)
    f = ctx.client().get_feature(ctx.app(args), args.feature)
    ctx.out(header(f["name"]))
    ctx.out(f"Description: {f['description']}")
    ctx.out(f"Enabled:     {'true' if f['enabled'] else 'false'}")
    ctx.out(f"Docs:        {f['doc_url']}")
    return 0


def _switch(ctx: Context, argv: list[str], enabled: bool) -> int:
    command = "features:enable" if enabled else "features:disable"
    parser = ctx.parser(command, f"{'Enable' if enabled else 'Disable'} a feature: {command} preboot.")
    parser.add_argument("feature")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"{'Enabling' if enabled else 'Disabling'} {args.feature} for {app}... ")
    ctx.client().set_feature(app, args.feature, enabled)
    ctx.out("done")
    return 0


def enable(ctx: Context, argv: list[str]) -> int:
    return _switch(ctx, argv, True)


def disable(ctx: Context, argv: list[str]) -> int:
    return _switch(ctx, argv, False)
