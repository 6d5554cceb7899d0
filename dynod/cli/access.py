"""users, users:add, access, access:add, access:remove: who may act on which app."""

from __future__ import annotations

from ..errors import UserError
from .command import Context


def list_users(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("users", "List the users.", app=False)
    ctx.parse(parser, argv)
    ctx.out("=== Users")
    for user in ctx.client().request("GET", "/users"):
        ctx.out(f"{user['email']}{'  (admin)' if user.get('admin') else ''}")
    return 0


def add_user(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("users:add", "Add a user and print a first API token for them.", app=False)
    parser.add_argument("email")
    parser.add_argument("--admin", action="store_true", help="may act on every app and on the host")
    args = ctx.parse(parser, argv)
    client = ctx.client()
    user = client.request("POST", "/users", {"email": args.email, "admin": args.admin})
    made = client.request("POST", "/oauth/authorizations", {"user": user["email"], "description": "first token"})
    ctx.out(f"Added {user['email']}{' (admin)' if args.admin else ''}")
    ctx.out(f"Token: {made['access_token']['token']}")
    return 0


def show(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("access", "List the app's owner and collaborators.")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    from ..api.client import _path

    rows = ctx.client().request("GET", _path("apps", app, "collaborators"))
    ctx.out(f"=== {app} Access")
    width = max((len(r["user"]["email"]) for r in rows), default=0)
    for row in rows:
        ctx.out(f"{row['user']['email']:<{width}}  {row['role']}")
    return 0


def add(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("access:add", "Let a user act on the app.")
    parser.add_argument("email")
    parser.add_argument("--owner", action="store_true", help="make them the owner of an app that has none "
                                                              "(the socket only)")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    from ..api.client import _path

    body = {"user": args.email, **({"role": "owner"} if args.owner else {})}
    made = ctx.client().request("POST", _path("apps", app, "collaborators"), body)
    if args.owner and made["role"] != "owner":
        raise UserError(f"{app} already has an owner; {args.email} was added as a collaborator.")
    ctx.out(f"Adding {args.email} access to the app {app}... done ({made['role']})")
    return 0


def remove(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("access:remove", "Stop a user acting on the app.")
    parser.add_argument("email")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    from ..api.client import _path

    ctx.client().request("DELETE", _path("apps", app, "collaborators", args.email))
    ctx.out(f"Removing {args.email} access from the app {app}... done")
    return 0
