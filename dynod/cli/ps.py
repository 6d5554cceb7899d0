"""ps, ps:scale, ps:type, ps:restart, ps:stop: the formation and the dynos running it."""

from __future__ import annotations

import re

from ..errors import UserError
from ..model import DYNO_SIZES, dyno_size
from .command import Context
from .output import header, table, time_ago

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import tzinfo

    from ..api.client import Json

    ScaleChange = tuple[str, str, int | None, str | None]  # type, "=" "+" or "-", quantity, size

_SCALE_HELP = "write it like web=2, web=2:standard-2X, web+1 or web-1"
# A type may itself contain '-' (Procfiles allow it): the greedy type leaves only the last +N/-N.
_RELATIVE = re.compile(r"^(.+)([+-])(\d+)$")
_TYPE = re.compile(r"^[A-Za-z0-9_-]+$")

# Never part of the formation: `run` (dynoctl run) and `scheduler` (Heroku Scheduler's runs).
ONE_OFF_TYPES = ("run", "scheduler")


def parse_scale(words: list[str]) -> list[ScaleChange]:
    """``web=3 worker+1 web=2:standard-2X`` -> [(type, "=", 3, None), ("worker", "+", 1, None), ...].

    The operator is "=" (absolute), "+" or "-" (relative to the current quantity); a size may
    follow an absolute quantity after ':', or stand alone (``web=standard-2X``: size only).
    """
    if not words:
        raise UserError(f"Nothing to scale: {_SCALE_HELP}.")
    changes: list[ScaleChange] = []
    seen: set[str] = set()
    for word in words:
        type, sep, rest = word.partition("=")
        if sep:
            quantity_text, colon, size = rest.partition(":")
            if quantity_text.isdigit() and (size or not colon):
                change = (type, "=", int(quantity_text), _check_size(size) if size else None)
            elif not colon and quantity_text.lower() in DYNO_SIZES:
                change = (type, "=", None, _check_size(quantity_text))  # web=standard-2X: the size alone
            else:
                raise UserError(f"Invalid scale argument {word!r}: quantities are whole numbers "
                                f"of 0 or more; {_SCALE_HELP}.")
        else:
            match = _RELATIVE.match(word)
            if match is None:
                raise UserError(f"Invalid scale argument {word!r}: {_SCALE_HELP}.")
            change = (match.group(1), match.group(2), int(match.group(3)), None)
        if not _TYPE.match(change[0]):
            raise UserError(f"Invalid process type in {word!r}: use a name from the Procfile; {_SCALE_HELP}.")
        if change[0] in seen:
            raise UserError(f"{change[0]} is scaled twice in one command: give each type once.")
        seen.add(change[0])
        changes.append(change)
    return changes


def _check_size(name: str) -> str:
    return dyno_size(name).name


def resolve_scale(changes: list[ScaleChange], formation: list[Json]) -> list[Json]:
    """Turn relative changes into absolute formation updates against the current formation."""
    current = {f["type"]: f["quantity"] for f in formation}
    updates: list[Json] = []
    for type, op, quantity, size in changes:
        update: Json = {"type": type}
        if op == "=":
            if quantity is not None:
                update["quantity"] = quantity
        else:
            if type not in current:
                raise UserError(f"No {type} process type in the formation: see `dynoctl ps:type`.")
            assert quantity is not None
            target = current[type] + quantity if op == "+" else current[type] - quantity
            if target < 0:
                raise UserError(f"Cannot scale {type} to {target}: it runs {current[type]}.")
            update["quantity"] = target
        if size is not None:
            update["size"] = size
        updates.append(update)
    return updates


def parse_type_sizes(words: list[str]) -> list[Json]:
    """``web=standard-2X worker=performance-M`` -> formation size updates."""
    updates: list[Json] = []
    for word in words:
        type, sep, size = word.partition("=")
        if not sep or not type or not size or not _TYPE.match(type):
            raise UserError(f"Invalid dyno type argument {word!r}: write it like web=standard-2X.")
        updates.append({"type": type, "size": size})
    return updates


def _dyno_order(name: str) -> tuple[str, int]:
    type, _, number = name.rpartition(".")
    return type, int(number) if number.isdigit() else 0


def format_ps(app: str, dynos: list[Json], formation: list[Json], now: float, tz: tzinfo | None = None,
              ) -> list[str]:
    if not dynos:
        return [f"No dynos on {app}."]
    commands = {f["type"]: f.get("command") for f in formation}
    by_type: dict[str, list[Json]] = {}
    for dyno in dynos:
        by_type.setdefault(dyno["type"], []).append(dyno)
    # Heroku's order: web first, the other process types by name, one-off dynos last.
    types = sorted(by_type, key=lambda t: (t in ONE_OFF_TYPES, t != "web", t))
    lines: list[str] = []
    for type in types:
        group = sorted(by_type[type], key=lambda d: _dyno_order(d["name"]))
        if lines:
            lines.append("")
        if type in ONE_OFF_TYPES:
            lines.append(header(f"{type}: one-off processes ({len(group)})"))
            for dyno in group:
                when = time_ago(dyno.get("updated_at"), now, tz)
                lines.append(f"{dyno['name']} ({dyno['size']}): {dyno['state']} {when}: {dyno['command']}")
            continue
        command = commands.get(type) or group[0].get("command", "")
        lines.append(header(f"{type} ({group[0]['size']}): {command} ({len(group)})"))
        for dyno in group:
            lines.append(f"{dyno['name']}: {dyno['state']} {time_ago(dyno.get('updated_at'), now, tz)}")
    return lines


def format_dyno_types(formation: list[Json]) -> list[str]:
    rows = [(f["type"], f["size"], f["quantity"]) for f in sorted(formation, key=lambda f: f["type"])]
    return [header("Dyno Types")] + table(("type", "size", "qty"), rows)


def show(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("ps", "List an app's dynos.")
    parser.add_argument("type", nargs="?", help="only this process type")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    client = ctx.client()
    dynos = client.list_dynos(app)
    if args.type:
        dynos = [d for d in dynos if d["type"] == args.type]
    for line in format_ps(app, dynos, client.get_formation(app), ctx.now(), ctx.tz):
        ctx.out(line)
    return 0


def scale(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("ps:scale", f"Change how many dynos of each type run, and their size: {_SCALE_HELP}.")
    parser.add_argument("changes", nargs="*", metavar="TYPE=N[:SIZE]|TYPE+N|TYPE-N")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    changes = parse_scale(args.changes)  # before any request: bad input costs nothing
    client = ctx.client()
    needs_current = any(op != "=" for _, op, _, _ in changes)
    updates = resolve_scale(changes, client.get_formation(app) if needs_current else [])
    ctx.progress("Scaling dynos... ")
    formation = client.update_formation(app, updates)
    scaled = {u["type"] for u in updates}
    running = ", ".join(
        f"{f['type']} at {f['quantity']}:{f['size']}" for f in formation if f["type"] in scaled)
    ctx.out(f"done, now running {running}")
    return 0


def dyno_type(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("ps:type", "Show the dyno size of each process type, or set it (web=standard-2X).")
    parser.add_argument("changes", nargs="*", metavar="TYPE=SIZE")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    updates = parse_type_sizes(args.changes)
    client = ctx.client()
    formation = client.update_formation(app, updates) if updates else client.get_formation(app)
    for line in format_dyno_types(formation):
        ctx.out(line)
    return 0


def restart(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("ps:restart", "Restart one dyno (web.1), every dyno of a type (web), or all.")
    parser.add_argument("target", nargs="?", metavar="DYNO|TYPE")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    what = "dynos" if args.target is None else f"{args.target} dyno" + ("" if "." in args.target else "s")
    ctx.progress(f"Restarting {what} on {app}... ")
    ctx.client().restart_dynos(app, args.target)
    ctx.out("done")
    return 0


def stop(ctx: Context, argv: list[str]) -> int:
    return _stop(ctx, argv, "ps:stop")


def kill(ctx: Context, argv: list[str]) -> int:
    """Heroku's ps:kill: the same stop as ps:stop (SIGTERM, then SIGKILL after the grace period)."""
    return _stop(ctx, argv, "ps:kill")


def _stop(ctx: Context, argv: list[str], verb: str) -> int:
    parser = ctx.parser(verb, "Stop a dyno (web.1) or all of a type; the formation brings them back.")
    parser.add_argument("target", metavar="DYNO|TYPE")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    what = f"{args.target} dyno" + ("" if "." in args.target else "s")
    ctx.progress(f"Stopping {what} on {app}... ")
    ctx.client().stop_dyno(app, args.target)
    ctx.out("done")
    return 0


def wait_progress(dynos: list[Json], formation: list[Json], version: int, *, type: str | None = None,
                  with_run: bool = False) -> tuple[int, int]:
    """(dynos up on ``version``, dynos there should be) for ps:wait; done when they are equal."""
    wanted = sum(f["quantity"] for f in formation if type is None or f["type"] == type)
    chosen = [d for d in dynos
              if (type is None or d["type"] == type) and (with_run or d["type"] not in ONE_OFF_TYPES)]
    if with_run:
        wanted += sum(1 for d in chosen if d["type"] in ONE_OFF_TYPES)
    ready = sum(1 for d in chosen if d["state"] == "up" and d["release"]["version"] == version)
    # A dyno on an older release, or one too many, keeps the wait going until it is gone.
    return ready, max(wanted, len(chosen))


def wait(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("ps:wait", "Wait until every dyno runs the latest release and is up.")
    parser.add_argument("-t", "--type", help="only this process type")
    parser.add_argument("-R", "--with-run", action="store_true", help="wait for one-off dynos too")
    parser.add_argument("-w", "--wait-interval", type=float, default=10.0, metavar="SECONDS",
                        help="how often to look (default 10, at least 0.5)")
    args = ctx.parse(parser, argv)
    if not 0.5 <= args.wait_interval <= 3600:
        raise UserError(f"Invalid --wait-interval {args.wait_interval:g}: use 0.5 to 3600 seconds.")
    app = ctx.app(args)
    client = ctx.client()
    version = client.get_release(app)["version"]
    ctx.progress(f"Waiting for every {'dyno' if args.type is None else args.type + ' dyno'} to be running "
                 f"v{version}... ")
    import time

    last = None
    while True:
        ready, total = wait_progress(client.list_dynos(app), client.get_formation(app), version, type=args.type,
                                     with_run=args.with_run)
        if (ready, total) != last:
            ctx.progress(f"{ready} / {total}, ")
            last = (ready, total)
        if ready == total:
            ctx.out("done")
            return 0
        time.sleep(args.wait_interval)


# --- ps:exec: a command inside a running dyno, attached as `dynoctl run` is --------------------------

_EXEC_VALUE_OPTIONS = ("-a", "--app", "-d", "--dyno", "--socket", "--host")


def split_exec_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pure: (dynoctl's options, the command's words). The command starts at its first word that
    is not an option's value, or after ``--``; none at all means an interactive bash."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    for index, word in enumerate(argv):
        if not word.startswith("-") and (index == 0 or argv[index - 1] not in _EXEC_VALUE_OPTIONS):
            return argv[:index], argv[index:]
    return argv, []


def exec_into(ctx: Context, argv: list[str]) -> int:
    import os
    import shlex

    from .run import _pump, _terminal_size

    parser = ctx.parser("ps:exec", "Run a command (default: bash) inside a running dyno, attached to this "
                                   "terminal: its processes, files and limits, as its app's user.")
    parser.add_argument("-d", "--dyno", required=True, metavar="DYNO", help="the running dyno, e.g. web.1")
    parser.add_argument("--no-tty", action="store_true", help="never allocate a terminal")
    options, words = split_exec_argv(argv)
    args = ctx.parse(parser, options)
    app = ctx.app(args)
    command = "" if not words else words[0] if len(words) == 1 else shlex.join(words)
    stdin_fd, stdout_fd, stderr_fd = ctx.fds
    use_tty = not args.no_tty and os.isatty(stdin_fd)
    rows, cols = _terminal_size(stdin_fd) if use_tty else (24, 80)
    ctx.stdout.flush()
    session = ctx.client().exec_attached(app, args.dyno, command, tty=use_tty, rows=rows, cols=cols,
                                         term=ctx.environ.get("TERM") if use_tty else None)
    with session:
        return _pump(session, stdin_fd, stdout_fd, stderr_fd, use_tty)
