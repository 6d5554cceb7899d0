"""scheduler, scheduler:add SCHEDULE -- COMMAND..., scheduler:remove JOB: Heroku Scheduler's jobs.

Each run of a job is a one-off dyno (scheduler.N) whose output is in `dynoctl logs`.
"""

from __future__ import annotations

import shlex

from ..errors import UserError
from .command import Context
from .output import table


def show(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("scheduler", "List an app's scheduled jobs with their next run (UTC)."), argv)
    app = ctx.app(args)
    jobs = ctx.client().list_jobs(app)
    if not jobs:
        ctx.out(f'{app} has no scheduled jobs; add one: dynoctl scheduler:add "every 10 minutes" -- COMMAND')
        return 0
    rows = []
    for job in jobs:
        last = job["last_run"]
        ran = "-" if last is None else " ".join(str(v) for v in (last["slot"], last["dyno"], last["outcome"]) if v)
        rows.append((job["id"][:8], job["schedule"], job["size"], job["next_run"], ran, job["command"]))
    for line in table(("ID", "SCHEDULE", "SIZE", "NEXT RUN", "LAST RUN", "COMMAND"), rows):
        ctx.out(line)
    return 0


def add(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("scheduler:add", 'Run a command on a schedule: scheduler:add "every 10 minutes" -- CMD. '
                        'Schedules: "every N minutes", "every hour at :MM", "every day at HH:MM" (UTC), or a '
                        "5-field cron line.")
    parser.add_argument("schedule")
    parser.add_argument("-s", "--size", help="the dyno size of each run (default standard-1X)")
    parser.add_argument("--no-catch-up", action="store_true",
                        help="skip a run missed while dynod was down, instead of running it once on start")
    # After --, every word is the command's (its own -a or -c included).
    at = argv.index("--") if "--" in argv else len(argv)
    args = ctx.parse(parser, argv[:at])
    words = argv[at + 1:]
    if not words:
        raise UserError('Usage: dynoctl scheduler:add "every 10 minutes" [-a APP] [-s SIZE] -- COMMAND...')
    command = words[0] if len(words) == 1 else shlex.join(words)
    app = ctx.app(args)
    job = ctx.client().add_job(app, args.schedule, command, size=args.size, catch_up=not args.no_catch_up)
    ctx.out(f"Added job {job['id'][:8]} to {app}: {job['schedule']}: {job['command']} (next run {job['next_run']})")
    return 0


def remove(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("scheduler:remove", "Remove a scheduled job: scheduler:remove JOB (its id or first 4+ "
                        "characters, from `dynoctl scheduler`).")
    parser.add_argument("job")
    args = ctx.parse(parser, argv)
    job = ctx.client().remove_job(ctx.app(args), args.job)
    ctx.out(f"Removed job {job['id'][:8]}: {job['schedule']}: {job['command']}")
    return 0
