"""pg:info, pg:psql, pg:backups*, pg:credentials:rotate, pg:reset, pg:ps, pg:kill: Heroku Postgres
operations on an app's heroku-postgresql add-ons (docs/addons.md). DATABASE names an add-on or an
attachment (DATABASE, DATABASE_URL, HEROKU_POSTGRESQL_RED); without it, the one attached as DATABASE."""

from __future__ import annotations

import os
import sys

from ..errors import UserError
from .command import Context
from .output import header, table


def _database_parser(ctx: Context, command: str, description: str, *, positional: bool = True):  # type: ignore[no-untyped-def]
    parser = ctx.parser(command, description)
    if positional:
        parser.add_argument("database", nargs="?", metavar="DATABASE")
    return parser


def _confirm(ctx: Context, app: str, what: str, confirm: str | None) -> None:
    if confirm is None:
        ctx.stderr.write(f" !    WARNING: Destructive Action\n !    {what}\n"
                         f" !    To proceed, type {app} or re-run this command with --confirm {app}\n\n> ")
        ctx.stderr.flush()
        confirm = ctx.stdin.readline().strip()
    if confirm != app:
        raise UserError(f"Confirmation {confirm!r} did not match {app}: nothing was done.")


def info(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(_database_parser(ctx, "pg:info", "Show the app's Postgres databases."), argv)
    app = ctx.app(args)
    client = ctx.client()
    addons = [a for a in client.list_addons(app) if a["addon_service"]["name"] == "heroku-postgresql"
              and (args.database is None or args.database in (a["name"], *[t["name"] for t in a["attachments"]],
                                                              *a["config_vars"]))]
    if not addons:
        raise UserError(f"{app} has no Postgres add-on{'' if args.database is None else ' ' + args.database}.")
    for addon in addons:
        detail = client.get_addon(addon["name"], app)
        names = [f"{t['name']}_URL" for t in detail["attachments"] if t["app"]["name"] == app]
        ctx.out(header(", ".join(names)))
        rows = [tuple(pair) for pair in detail.get("info", [])]
        width = max(len(k) for k, _ in rows) + 1
        for key, value in rows:
            ctx.out(f"{key + ':':<{width}} {value}")
        ctx.out("")
    return 0


def psql(ctx: Context, argv: list[str]) -> int:
    """psql in a one-off dyno of the app, on the dyno network, TTY or piped (as dynoctl run)."""
    parser = _database_parser(ctx, "pg:psql", "An interactive psql in a one-off dyno (-c for one command).")
    parser.add_argument("-c", "--command", help="one SQL command, then exit")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    client = ctx.client()
    addon = client.get_addon(args.database or "DATABASE", app)
    var = next((f"{t['name']}_URL" for t in addon["attachments"] if t["app"]["name"] == app), None)
    if var is None:
        raise UserError(f"{addon['name']} is not attached to {app}.")
    from .run import run

    command = f'command -v psql >/dev/null || {{ echo "psql is not in this app\'s stack" >&2; exit 127; }}; ' \
              f'exec psql "${var}"' + (f" -c {_quote(args.command)}" if args.command else "")
    if os.isatty(ctx.fds[0]):
        ctx.out(f"--> Connecting to {addon['name']}")
    rest = ["-a", app] + (["--socket", args.socket] if args.socket else []) + ["--", "bash", "-c", command]
    return run(ctx, rest)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def backups(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("pg:backups", "List the app's backups."), argv)
    app = ctx.app(args)
    client = ctx.client()
    items = client.pg_backups(app)
    ctx.out(header("Backups"))
    if not items:
        ctx.out(f"No backups. Capture one with dynoctl pg:backups:capture -a {app}")
    else:
        rows = [[b["id"], _when(b["created_at"]), b["status"].title() + (f" ({b['error']})" if b.get("error") else ""),
                 _size(b["size"]), b["addon"]] for b in reversed(items)]
        for line in table(["Id", "Created at", "Status", "Size", "Database"], rows):
            ctx.out(line)
    schedules = client.pg_backup_schedules(app)
    ctx.out("")
    ctx.out(header("Backup Schedules"))
    for s in schedules:
        ctx.out(f"{s['addon']}: daily at {s['at']} (next {s['next_run_at']})")
    if not schedules:
        ctx.out("No backup schedules.")
    return 0


def _when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(ts))


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f}{unit}" if unit != "B" else f"{n}B"
        size /= 1024
    return f"{n}B"


def capture(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(_database_parser(ctx, "pg:backups:capture", "Capture a backup (verified)."), argv)
    app = ctx.app(args)
    ctx.progress("Starting backup... ")
    backup = ctx.client().pg_backup_capture(app, args.database)
    ctx.out(f"done, {backup['id']} of {backup['addon']} ({_size(backup['size'])}, verified)")
    return 0


def restore(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("pg:backups:restore", "Restore a backup (default: the latest) into a database.")
    parser.add_argument("backup", nargs="?", metavar="BACKUP")
    parser.add_argument("database", nargs="?", metavar="DATABASE")
    parser.add_argument("--confirm", metavar="APP")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    backup = args.backup
    database = args.database
    if backup is not None and not (backup[:1] in "abf" and backup[1:].isdigit()) and database is None:
        backup, database = None, backup  # pg:backups:restore DATABASE (the latest backup)
    _confirm(ctx, app, f"This command will replace every table and row of {database or 'DATABASE'} on {app}.",
             args.confirm)
    ctx.progress("Restoring... ")
    result = ctx.client().pg_backup_restore(app, backup, database)
    ctx.out(f"done, {result['backup']['id']} into {result['addon']['name']}")
    return 0


def download(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("pg:backups:download", "Download a backup (default: the latest) as latest.dump.")
    parser.add_argument("backup", nargs="?", metavar="BACKUP")
    parser.add_argument("-o", "--output", help="the file (default: latest.dump; - for stdout)")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    path = args.output or "latest.dump"
    client = ctx.client()
    if path == "-":
        ctx.stdout.flush()
        client.pg_backup_download(app, args.backup, sys.stdout.buffer)
        return 0
    tmp = f"{path}.part"
    try:
        with open(tmp, "wb") as out:
            size = client.pg_backup_download(app, args.backup, out)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    ctx.out(f"Downloaded {_size(size)} to {path}")
    return 0


def delete(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("pg:backups:delete", "Delete a backup.")
    parser.add_argument("backup", metavar="BACKUP")
    parser.add_argument("--confirm", metavar="APP")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    _confirm(ctx, app, f"This command will delete backup {args.backup} of {app}.", args.confirm)
    ctx.client().pg_backup_delete(app, args.backup)
    ctx.out(f"Deleted {args.backup}")
    return 0


def schedule(ctx: Context, argv: list[str]) -> int:
    parser = _database_parser(ctx, "pg:backups:schedule", "Back up every day at a time: --at '02:00 UTC'.")
    parser.add_argument("--at", required=True, help="HH:MM and a time zone, like '02:00 America/New_York'")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    result = ctx.client().pg_backup_schedule(app, args.at, args.database)
    ctx.out(f"Scheduled automatic daily backups of {result['addon']} at {result['at']} "
            f"(next {result['next_run_at']}; the last {result['retention']} kept)")
    return 0


def unschedule(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(_database_parser(ctx, "pg:backups:unschedule", "Stop the daily backups."), argv)
    ctx.client().pg_backup_unschedule(ctx.app(args), args.database)
    ctx.out("Stopped automatic daily backups")
    return 0


def rotate(ctx: Context, argv: list[str]) -> int:
    parser = _database_parser(ctx, "pg:credentials:rotate", "New credentials; attached apps restart on them.")
    parser.add_argument("--confirm", metavar="APP")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    _confirm(ctx, app, "This command will end every session on the old credentials and restart the apps "
                       "attached to the database.", args.confirm)
    ctx.progress("Rotating credentials... ")
    result = ctx.client().pg(app, "credentials-rotate", {"database": args.database})
    ctx.out("done, " + ", ".join(f"{r['app']['name']} v{r['version']}" for r in result["releases"]))
    return 0


def reset(ctx: Context, argv: list[str]) -> int:
    parser = _database_parser(ctx, "pg:reset", "Delete every table and row of a database.")
    parser.add_argument("--confirm", metavar="APP")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    _confirm(ctx, app, f"This command will delete all data in {args.database or 'DATABASE'} on {app}.", args.confirm)
    ctx.progress("Resetting... ")
    result = ctx.client().pg(app, "reset", {"database": args.database})
    ctx.out(f"done, {result['addon']['name']} is empty")
    return 0


def ps(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(_database_parser(ctx, "pg:ps", "The database's sessions and their queries."), argv)
    rows = ctx.client().pg(ctx.app(args), "ps", {"database": args.database})
    if not rows:
        ctx.out("No sessions.")
        return 0
    for line in table(["pid", "state", "source", "running_for", "waiting", "query"],
                      [[r["pid"], r["state"], r["source"], f"{r['running_for']:.3f}s", r["waiting"],
                        (r["query"] or "")[:80]] for r in rows]):
        ctx.out(line)
    return 0


def kill(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("pg:kill", "Cancel a session's query (--force: end the session).")
    parser.add_argument("pid", type=int)
    parser.add_argument("database", nargs="?", metavar="DATABASE")
    parser.add_argument("-f", "--force", action="store_true")
    args = ctx.parse(parser, argv)
    result = ctx.client().pg(ctx.app(args), "kill", {"database": args.database, "pid": args.pid,
                                                      "force": args.force})
    ctx.out(f"{'Terminated' if args.force else 'Cancelled'} {result['pid']}" if result["killed"]
            else f"{result['pid']} was not running a query")
    return 0
