"""addons, addons:create, addons:info, addons:destroy, addons:attach, addons:detach, addons:plans,
addons:services: Heroku's add-ons, attached through config vars (docs/addons.md)."""

from __future__ import annotations

from ..errors import UserError
from .command import Context
from .output import header, table


def _attachments(addon: dict, app: str | None = None) -> list[str]:  # type: ignore[type-arg]
    return [f"{'' if a['app']['name'] == addon['app']['name'] else a['app']['name'] + '::'}{a['name']}"
            for a in addon.get("attachments", []) if app is None or a["app"]["name"] == app]


def list_addons(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("addons", "List the add-ons attached to an app (--all: every add-on).")
    parser.add_argument("--all", action="store_true", help="every add-on of every app")
    args = ctx.parse(parser, argv)
    app = None if args.all else ctx.app(args)
    addons = ctx.client().list_addons(app)
    if not addons:
        ctx.out(f"No add-ons for app {app}." if app else "No add-ons.")
        return 0
    rows = []
    for addon in addons:
        owner = "" if addon["app"]["name"] == app else f" (billed to {addon['app']['name']})"
        rows.append([addon["name"] + owner, addon["plan"]["name"], "free", addon["state"]])
        for name in _attachments(addon, app):
            rows.append([f" └─ as {name}", "", "", ""])
    for line in table(["Add-on", "Plan", "Price", "State"], rows):
        ctx.out(line)
    return 0


def create(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("addons:create", "Create an add-on and attach it: addons:create heroku-postgresql[:PLAN].")
    parser.add_argument("service_plan", metavar="SERVICE[:PLAN]")
    parser.add_argument("--as", dest="attachment", metavar="NAME", help="the attachment's name (NAME_URL)")
    parser.add_argument("--name", help="the add-on's name (default: a generated one)")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"Creating {args.service_plan} on ⬢ {app}... ")
    addon = ctx.client().create_addon(app, args.service_plan, attachment=args.attachment, name=args.name)
    ctx.out(f"free (provisioned in {addon.get('provision_seconds', 0):.1f}s)")
    ctx.out(f"Created {addon['name']} as {', '.join(addon['config_vars'])}")
    if "release" in addon:
        ctx.out(f"Released v{addon['release']['version']}")
    ctx.out(f"Use dynoctl addons:info {addon['name']} -a {app} to view it")
    return 0


def info(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("addons:info", "Show an add-on: addons:info ADDON (a name or an attachment name).")
    parser.add_argument("addon")
    args = ctx.parse(parser, argv)
    addon = ctx.client().get_addon(args.addon, getattr(args, "app", None) or ctx.environ.get("DYNOD_APP"))
    ctx.out(header(addon["name"]))
    rows = [("Attachments", ", ".join(_attachments(addon)) or "none"), ("Owning app", addon["app"]["name"]),
            ("Plan", addon["plan"]["name"]), ("Price", "free"), ("State", addon["state"]),
            ("Created at", addon["created_at"]), ("Config vars", ", ".join(addon["config_vars"]) or "none")]
    rows += [tuple(pair) for pair in addon.get("info", [])]
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        ctx.out(f"{key + ':':<{width}} {value}")
    return 0


def destroy(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("addons:destroy", "Destroy an add-on (asks for its name; --confirm NAME for scripts).")
    parser.add_argument("addon")
    parser.add_argument("--confirm", metavar="NAME", help="the add-on's name (or the app's), to skip the question")
    parser.add_argument("--force", "-f", action="store_true", help="also detach it from other apps")
    parser.add_argument("--no-final-backup", action="store_true", help="destroy a Postgres add-on without the "
                        "final backup it otherwise gets first")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    client = ctx.client()
    addon = client.get_addon(args.addon, app)
    confirmation = args.confirm
    if confirmation is None:
        ctx.stderr.write(" !    WARNING: Destructive Action\n"
                         f" !    This command will affect the add-on {addon['name']}\n"
                         f" !    To proceed, type {addon['name']} or re-run this command with --confirm "
                         f"{addon['name']}\n\n> ")
        ctx.stderr.flush()
        confirmation = ctx.stdin.readline().strip()
    if confirmation not in (addon["name"], app):
        raise UserError(f"Confirmation {confirmation!r} did not match {addon['name']}: nothing was destroyed.")
    ctx.progress(f"Destroying {addon['name']} on ⬢ {app}... ")
    result = client.destroy_addon(app, addon["name"], force=args.force, final_backup=not args.no_final_backup)
    ctx.out("done")
    if result.get("final_backup"):
        ctx.out(f"Final backup {result['final_backup']['id']} kept (dynoctl pg:backups -a {app})")
    for release in result.get("releases", []):
        ctx.out(f"Released v{release['version']} of {release['app']['name']}")
    return 0


def upgrade(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("addons:upgrade", "Change an add-on's plan: addons:upgrade ADDON [SERVICE:]PLAN.")
    parser.add_argument("addon")
    parser.add_argument("plan")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"Changing {args.addon} on ⬢ {app} to {args.plan}... ")
    result = ctx.client().change_addon_plan(app, args.addon, args.plan)
    ctx.out("done")
    for release in result.get("releases", []):
        ctx.out(f"Released v{release['version']} of {release['app']['name']}")
    return 0


def attach(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("addons:attach", "Attach an existing add-on to an app: addons:attach ADDON -a APP.")
    parser.add_argument("addon")
    parser.add_argument("--as", dest="attachment", metavar="NAME", help="the attachment's name (NAME_URL)")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"Attaching {args.addon} to ⬢ {app}... ")
    result = ctx.client().attach_addon(args.addon, app, args.attachment)
    ctx.out("done")
    ctx.out(f"Setting {', '.join(result['config_vars'])} config vars and restarting ⬢ {app}... "
            f"done, v{result['release']['version']}")
    return 0


def detach(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("addons:detach", "Detach an add-on from an app: addons:detach ATTACHMENT -a APP.")
    parser.add_argument("attachment")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"Detaching {args.attachment} from ⬢ {app}... ")
    result = ctx.client().detach_addon(app, args.attachment)
    ctx.out("done")
    ctx.out(f"Unsetting {result['name']} config vars and restarting ⬢ {app}... done, v{result['release']['version']}")
    return 0


def plans(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("addons:plans", "List a service's plans: addons:plans heroku-postgresql.", app=False)
    parser.add_argument("service")
    args = ctx.parse(parser, argv)
    rows = []
    for plan in ctx.client().list_addon_plans(args.service):
        limits = plan["limits"]
        what = (f"{limits['memory_mb']} MB, {limits['connections']} clients, {limits['maxmemory_policy']}"
                if limits.get("maxmemory_policy") else
                f"{limits['storage_mb'] // 1024} GB storage, {limits['connections']} connections")
        rows.append(["default" if plan["default"] else "", plan["name"], plan["human_name"], what, "free"])
    for line in table(["", "Slug", "Name", "Limits", "Price"], rows):
        ctx.out(line)
    return 0


def services(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("addons:services", "List the add-on services.", app=False), argv)
    del args
    for line in table(["Slug", "Name", "State"],
                      [[s["name"], s["human_name"], s["state"]] for s in ctx.client().list_addon_services()]):
        ctx.out(line)
    return 0
