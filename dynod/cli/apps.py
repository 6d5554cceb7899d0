"""apps, apps:create, apps:destroy, apps:info."""

from __future__ import annotations

from ..errors import UserError
from .command import Context
from .output import header, key_values


def list_apps(ctx: Context, argv: list[str]) -> int:
    ctx.parse(ctx.parser("apps", "List the apps on this host.", app=False), argv)
    apps = ctx.client().list_apps()
    if not apps:
        ctx.out("You have no apps: create one with `dynoctl apps:create NAME`.")
        return 0
    ctx.out(header("Apps"))
    for app in apps:
        ctx.out(app["name"] + ("  (maintenance)" if app.get("maintenance") else ""))
    return 0


def create(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("apps:create", "Create an app; without NAME, dynod picks one.", app=False)
    parser.add_argument("name", nargs="?", help="3-30 lowercase letters, digits and dashes")
    args = ctx.parse(parser, argv)
    ctx.progress(f"Creating {args.name or 'app'}... ")
    app = ctx.client().create_app(args.name)
    ctx.out(f"done, {app['name']}")
    ctx.out(app["web_url"])
    return 0


def destroy(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("apps:destroy", "Destroy an app, its releases, dynos and logs, for good.")
    parser.add_argument("--confirm", metavar="NAME", help="the app's name, to skip the question (scripts)")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    confirmation = args.confirm
    if confirmation is None:
        ctx.stderr.write(f" !    WARNING: This will delete {app} with its releases, dynos and logs.\n"
                         f" !    To proceed, type {app} or re-run this command with --confirm {app}\n\n> ")
        ctx.stderr.flush()
        confirmation = ctx.stdin.readline().strip()
    if confirmation != app:
        raise UserError(f"Confirmation {confirmation!r} did not match {app}: nothing was destroyed.")
    ctx.progress(f"Destroying {app} (including all its dynos)... ")
    ctx.client().destroy_app(app)
    ctx.out("done")
    return 0


def info(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("apps:info", "Show an app's details."), argv)
    app_name = ctx.app(args)
    client = ctx.client()
    app = client.get_app(app_name)
    formation = client.get_formation(app_name)
    dynos = ", ".join(f"{f['type']}: {f['quantity']}" for f in formation if f["quantity"])
    current = app.get("current_release")
    ctx.out(header(app["name"]))
    for line in key_values([
        ("Dynos", dynos or "none"),
        ("Maintenance", "on" if app.get("maintenance") else "off"),
        ("Release", f"v{current}" if current else "none (deploy with `dynoctl deploy`)"),
        ("Stack", app.get("stack")),
        ("Web URL", app.get("web_url")),
    ]):
        ctx.out(line)
    return 0
