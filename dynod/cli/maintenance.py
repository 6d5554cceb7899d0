"""maintenance, maintenance:on, maintenance:off: the router answers H80 instead of the app."""

from __future__ import annotations

from .command import Context


def show(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("maintenance", "Show whether an app is in maintenance mode."), argv)
    ctx.out("on" if ctx.client().get_app(ctx.app(args)).get("maintenance") else "off")
    return 0


def _switch(ctx: Context, argv: list[str], on: bool) -> int:
    command = "maintenance:on" if on else "maintenance:off"
    what = "Serve a maintenance page instead of the app." if on else "Serve the app again."
    args = ctx.parse(ctx.parser(command, what), argv)
    app = ctx.app(args)
    ctx.progress(f"{'Enabling' if on else 'Disabling'} maintenance mode for {app}... ")
    ctx.client().set_maintenance(app, on)
    ctx.out("done")
    return 0


def on(ctx: Context, argv: list[str]) -> int:
    return _switch(ctx, argv, True)


def off(ctx: Context, argv: list[str]) -> int:
    return _switch(ctx, argv, False)
