"""logs [-n N] [-t] [-p PS] [-s SOURCE]: the app's log stream, Heroku's Logplex style."""

from __future__ import annotations

from .command import Context

MAX_LINES = 1500  # Heroku keeps, and serves, the last 1,500 lines


def _lines(text: str) -> int:
    import argparse

    if not text.isdigit() or not 1 <= int(text) <= MAX_LINES:
        raise argparse.ArgumentTypeError(f"lines must be a whole number from 1 to {MAX_LINES}, not {text!r}")
    return int(text)


def logs(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("logs", "Show an app's recent log lines, or follow them with --tail.")
    parser.add_argument("-n", "--num", type=_lines, default=100, help="lines (default 100, max 1500)")
    parser.add_argument("-t", "--tail", action="store_true", help="keep printing new lines until Ctrl-C")
    parser.add_argument("-p", "--ps", help="only this dyno (web.1) or process type (web)")
    parser.add_argument("-s", "--source", choices=("app", "dynod"), help="only the app's lines or dynod's")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    client = ctx.client()
    if not args.tail:
        for line in client.log_lines(app, args.num, args.ps, args.source):
            ctx.out(line)
        return 0
    stream = client.tail_logs(app, args.num, args.ps, args.source)
    try:
        for line in stream:
            ctx.out(line)
            ctx.stdout.flush()  # a tail is read as it happens, even through a pipe
    finally:
        stream.close()  # closes its connection at once, not whenever the generator is collected
    return 0
