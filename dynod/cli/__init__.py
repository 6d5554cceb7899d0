"""dynoctl: the platform from the command line, with Heroku CLI habits.

``dynoctl COMMAND [options]``. Each topic is a module with one function per command; only the
module of the command being run is imported, because ``dynoctl run`` must start in tens of
milliseconds. Every failure prints one line on stderr and exits 1 (130 on Ctrl-C); a traceback
is never what a user sees.
"""

from __future__ import annotations

import importlib
import sys

from ..errors import UserError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import TextIO

    from .command import Context

# name -> (module, function, summary). Heroku's topic:command names, in the order help shows them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "apps": ("apps", "list_apps", "list the apps"),
    "apps:create": ("apps", "create", "create an app: apps:create [NAME]"),
    "apps:destroy": ("apps", "destroy", "destroy an app for good (asks for its name)"),
    "apps:info": ("apps", "info", "show an app's details and web URL"),
    "config": ("config", "show", "show the config vars"),
    "config:get": ("config", "get", "print one config var: config:get KEY"),
    "config:set": ("config", "set_vars", "set config vars: config:set KEY=value..."),
    "config:unset": ("config", "unset", "remove config vars: config:unset KEY..."),
    "deploy": ("deploy", "deploy", "build a directory with buildpacks and release it: deploy [DIR] [--no-build]"),
    "builds": ("deploy", "builds", "list the builds"),
    "builds:output": ("deploy", "builds_output", "show a build's output: builds:output [ID]"),
    "buildpacks": ("buildpacks", "show", "list the app's buildpacks, in build order"),
    "buildpacks:add": ("buildpacks", "add", "add a buildpack: buildpacks:add heroku/python [--index N]"),
    "buildpacks:set": ("buildpacks", "set_buildpack", "set the buildpack at --index N (default 1): buildpacks:set URL"),
    "buildpacks:remove": ("buildpacks", "remove", "remove a buildpack: buildpacks:remove URL | --index N"),
    "buildpacks:clear": ("buildpacks", "clear", "remove every buildpack: the next build detects them"),
    "git:remote": ("keys", "git_remote", "add a git remote named dynod: git:remote [--ssh-host HOST]"),
    "keys": ("keys", "show", "list the SSH keys that may git push"),
    "keys:add": ("keys", "add", "allow an SSH key to git push: keys:add [FILE]"),
    "keys:remove": ("keys", "remove", "remove an SSH key: keys:remove KEY"),
    "addons": ("addons", "list_addons", "list the add-ons attached to the app (--all: every add-on)"),
    "addons:create": ("addons", "create", "create an add-on: addons:create heroku-postgresql[:PLAN] [--as NAME]"),
    "addons:info": ("addons", "info", "show an add-on: addons:info ADDON"),
    "addons:destroy": ("addons", "destroy", "destroy an add-on (asks for its name): addons:destroy ADDON"),
    "addons:upgrade": ("addons", "upgrade", "change an add-on's plan: addons:upgrade ADDON PLAN"),
    "addons:downgrade": ("addons", "upgrade", "change an add-on's plan: addons:downgrade ADDON PLAN"),
    "addons:attach": ("addons", "attach", "attach an add-on to an app: addons:attach ADDON -a APP [--as NAME]"),
    "addons:detach": ("addons", "detach", "detach an add-on from an app: addons:detach ATTACHMENT"),
    "addons:plans": ("addons", "plans", "list a service's plans: addons:plans heroku-postgresql"),
    "addons:services": ("addons", "services", "list the add-on services"),
    "pg:info": ("pg", "info", "show the app's Postgres databases"),
    "pg:psql": ("pg", "psql", "psql in a one-off dyno: pg:psql [DATABASE] [-c SQL]"),
    "pg:backups": ("pg", "backups", "list the backups and schedules"),
    "pg:backups:capture": ("pg", "capture", "capture a verified backup: pg:backups:capture [DATABASE]"),
    "pg:backups:restore": ("pg", "restore", "restore a backup: pg:backups:restore [BACKUP] [DATABASE]"),
    "pg:backups:download": ("pg", "download", "download a backup: pg:backups:download [BACKUP] [-o FILE]"),
    "pg:backups:delete": ("pg", "delete", "delete a backup: pg:backups:delete BACKUP"),
    "pg:backups:schedule": ("pg", "schedule", "back up daily: pg:backups:schedule [DATABASE] --at '02:00 UTC'"),
    "pg:backups:unschedule": ("pg", "unschedule", "stop the daily backups"),
    "pg:credentials:rotate": ("pg", "rotate", "new credentials, attached apps restarted"),
    "pg:reset": ("pg", "reset", "delete every table and row: pg:reset [DATABASE]"),
    "pg:ps": ("pg", "ps", "the database's sessions and queries"),
    "pg:kill": ("pg", "kill", "cancel a query: pg:kill PID [--force]"),
    "redis:info": ("redis", "info", "show the app's Redis add-ons"),
    "redis:cli": ("redis", "cli", "run Redis commands: redis:cli [-c 'SET k v']"),
    "releases": ("releases", "list_releases", "list the releases"),
    "releases:info": ("releases", "info", "show a release: releases:info [vN]"),
    "releases:rollback": ("releases", "rollback", "release an old release again: releases:rollback [vN]"),
    "releases:create": ("releases", "create", "upload a slug and release it: releases:create --slug FILE"),
    "ps": ("ps", "show", "list the dynos"),
    "ps:scale": ("ps", "scale", "scale process types: ps:scale web=3 worker=2:standard-2X web+1"),
    "ps:type": ("ps", "dyno_type", "show or set dyno sizes: ps:type [web=standard-2X...]"),
    "ps:restart": ("ps", "restart", "restart dynos: ps:restart [DYNO|TYPE]"),
    "ps:stop": ("ps", "stop", "stop a dyno: ps:stop DYNO|TYPE"),
    "ps:kill": ("ps", "kill", "stop a dyno, as ps:stop: ps:kill DYNO|TYPE"),
    "ps:exec": ("ps", "exec_into", "run a command (bash) inside a running dyno: ps:exec -d web.1 [COMMAND...]"),
    "ps:wait": ("ps", "wait", "wait until every dyno runs the latest release: ps:wait [-t TYPE] [-R]"),
    "ps:autoscale": ("autoscale", "show", "show the web dynos' autoscaling settings and last decision"),
    "ps:autoscale:enable": ("autoscale", "enable", "autoscale web on p95: ps:autoscale:enable web --min 1 --max 10 "
                            "--p95 500ms"),
    "ps:autoscale:disable": ("autoscale", "disable", "stop autoscaling web: ps:autoscale:disable web"),
    "scheduler": ("scheduler", "show", "list the scheduled jobs with their next run"),
    "scheduler:add": ("scheduler", "add", 'run a command on a schedule: scheduler:add "every 10 minutes" -- CMD'),
    "scheduler:remove": ("scheduler", "remove", "remove a scheduled job: scheduler:remove JOB"),
    "features": ("features", "show", "list the app's features (preboot)"),
    "features:info": ("features", "info", "show a feature: features:info preboot"),
    "features:enable": ("features", "enable", "enable a feature: features:enable preboot"),
    "features:disable": ("features", "disable", "disable a feature: features:disable preboot"),
    "healthcheck": ("healthcheck", "show", "show the web health check"),
    "healthcheck:set": ("healthcheck", "set_check", "check web dynos over HTTP: healthcheck:set --path /health"),
    "healthcheck:remove": ("healthcheck", "remove", "remove the web health check"),
    "run": ("run", "run", "run a one-off dyno attached to this terminal: run COMMAND..."),
    "run:detached": ("run", "run_detached", "run a one-off dyno logging its output: run:detached COMMAND..."),
    "logs": ("logs", "logs", "show the logs: logs [-n N] [-t] [-p DYNO] [-s app|dynod]"),
    "drains": ("drains", "show", "list log drains"),
    "drains:add": ("drains", "add", "add a log drain: drains:add URL"),
    "drains:remove": ("drains", "remove", "remove a log drain: drains:remove URL"),
    "domains": ("domains", "show", "list the hostnames routed to the app"),
    "domains:add": ("domains", "add", "route a hostname to the app: domains:add HOST"),
    "domains:remove": ("domains", "remove", "stop routing a hostname: domains:remove HOST"),
    "certs": ("certs", "show", "list TLS certificates"),
    "certs:add": ("certs", "add", "add a TLS certificate: certs:add CERT KEY --domain D"),
    "certs:auto": ("certs", "auto", "show Automatic Certificate Management's status per domain"),
    "certs:auto:enable": ("certs", "auto_enable", "get and renew certificates for custom domains (ACME)"),
    "certs:auto:disable": ("certs", "auto_disable", "stop renewing certificates automatically"),
    "certs:auto:refresh": ("certs", "auto_refresh", "retry failing certificates now"),
    "routing:policy": ("routing", "policy", "show or set how web dynos are picked: routing:policy [random|p2c]"),
    "maintenance": ("maintenance", "show", "show maintenance mode"),
    "maintenance:on": ("maintenance", "on", "serve a maintenance page (H80)"),
    "maintenance:off": ("maintenance", "off", "serve the app again"),
    "stacks": ("stacks", "show", "list the stacks"),
    "stacks:build": ("stacks", "build", "build a stack: stacks:build [NAME]"),
    "metrics": ("metrics", "show", "response times, throughput, errors, memory: metrics [--type web] [--since 1h]"),
    "dashboard": ("metrics", "dashboard", "print the web dashboard's address (with its login token)"),
    "login": ("auth", "login", "store an API token for a remote dynod: login --host https://HOST:PORT"),
    "logout": ("auth", "logout", "forget the token stored for a remote dynod"),
    "auth:token": ("auth", "token", "print an API token (on the socket: a new one for the administrator)"),
    "auth:whoami": ("auth", "whoami", "show who the API sees"),
    "authorizations": ("auth", "list_authorizations", "list your API tokens"),
    "authorizations:create": ("auth", "create_authorization",
                              "make an API token: authorizations:create [-d DESC] [-e SECONDS] [--user EMAIL]"),
    "authorizations:revoke": ("auth", "revoke_authorization", "revoke an API token: authorizations:revoke ID"),
    "users": ("access", "list_users", "list the users (the administrator's)"),
    "users:add": ("access", "add_user", "add a user and print their first token: users:add EMAIL [--admin]"),
    "access": ("access", "show", "list the app's owner and collaborators"),
    "access:add": ("access", "add", "let a user act on the app: access:add EMAIL [--owner]"),
    "access:remove": ("access", "remove", "stop a user acting on the app: access:remove EMAIL"),
    "status": ("status", "status", "show dynod's status"),
    "system:shutdown": ("status", "shutdown", "stop dynod: system:shutdown [--stop-dynos]"),
}

# Heroku's shorthands.
ALIASES = {
    "create": "apps:create", "destroy": "apps:destroy", "info": "apps:info", "apps:list": "apps",
    "config:add": "config:set", "config:remove": "config:unset", "releases:list": "releases",
    "rollback": "releases:rollback", "scale": "ps:scale", "restart": "ps:restart", "stop": "ps:stop",
    "dyno:scale": "ps:scale", "dyno:restart": "ps:restart", "dyno:stop": "ps:stop", "ps:resize": "ps:type",
    "dyno:kill": "ps:kill",
    "buildpacks:list": "buildpacks", "drains:list": "drains", "domains:list": "domains", "certs:list": "certs",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["Usage: dynoctl COMMAND [-a APP] [options]   (dynoctl COMMAND --help for its options)", "",
             "Commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    lines += ["", "Environment: DYNOD_APP (the app), DYNOD_SOCKET (default /run/dynod/api.sock), "
                  "DYNOD_HOST (a remote dynod: see dynoctl login)."]
    return "\n".join(lines)


def resolve(name: str) -> tuple[str, str]:
    """A command name (or alias) -> (module, function); UserError naming the closest command."""
    name = ALIASES.get(name, name)
    if name in COMMANDS:
        module, function, _ = COMMANDS[name]
        return module, function
    import difflib

    close = difflib.get_close_matches(name, list(COMMANDS) + list(ALIASES), n=1)
    hint = f"did you mean `dynoctl {close[0]}`?" if close else "see `dynoctl help`."
    raise UserError(f"Unknown command {name!r}: {hint}")


def run_command(ctx: Context, argv: list[str]) -> int:
    """Run ``argv`` (without the program name) in ``ctx``; exceptions propagate (see ``main``)."""
    from .command import HelpShown

    if not argv or argv[0] in ("help", "-h", "--help"):
        if len(argv) > 1:
            return run_command(ctx, [argv[1], "--help"])
        ctx.out(usage())
        return 0
    if argv[0] == "--version":
        from .. import __version__

        ctx.out(f"dynoctl {__version__}")
        return 0
    module, function = resolve(argv[0])
    command = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    try:
        return command(ctx, argv[1:])
    except HelpShown:
        return 0


def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    fds: tuple[int, int, int] = (0, 1, 2),
) -> int:
    """dynoctl's entry point; returns the exit status (the console script passes it to sys.exit)."""
    from .command import Context

    ctx = Context(stdout=stdout, stderr=stderr, stdin=stdin, environ=environ, fds=fds)
    try:
        return run_command(ctx, sys.argv[1:] if argv is None else argv)
    except UserError as exc:
        _fail(ctx, f"{exc}")
        return 1
    except KeyboardInterrupt:
        _fail(ctx, "Interrupted.")
        return 130
    except BrokenPipeError:
        return 1  # stdout went away (`dynoctl logs | head`): nobody is left to tell
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes one line, not a traceback
        _fail(ctx, f"dynoctl failed unexpectedly ({type(exc).__name__}: {exc}); please report it.")
        return 1
    finally:
        ctx.close()


def _fail(ctx: Context, message: str) -> None:
    try:
        ctx.stdout.flush()
    except (OSError, ValueError):
        pass
    # Heroku's CLI marks errors with ' !'; one line, on stderr, so stdout stays parseable.
    ctx.stderr.write(f" !    {message}\n")
    ctx.stderr.flush()
