"""ps:autoscale, ps:autoscale:enable web --min 1 --max 10 --p95 500ms, ps:autoscale:disable web."""

from __future__ import annotations

from .command import Context


def show(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("ps:autoscale", "Show an app's autoscaling settings and last decision."), argv)
    app = ctx.app(args)
    policies = ctx.client().get_autoscale(app)
    if not policies:
        ctx.out(f"Autoscaling is off for {app}; turn it on: dynoctl ps:autoscale:enable web --min 1 --max 10 "
                "--p95 500ms")
        return 0
    for policy in policies:
        ctx.out(f"{policy['type']}: autoscaling between {policy['min']} and {policy['max']} dynos, p95 goal "
                f"{policy['p95_goal_ms']:g} ms (measured every {policy['window_s']:g} s)")
        last = policy["last_decision"]
        if last is not None:
            ctx.out(f"  last decision {last['at']}: {last['quantity']} dynos: {last['reason']}")
    return 0


def enable(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("ps:autoscale:enable", "Scale web dynos on the router's p95 response time.")
    parser.add_argument("type", nargs="?", default="web", help="the process type (web only)")
    parser.add_argument("--min", type=int, required=True, help="the fewest dynos (at least 1)")
    parser.add_argument("--max", type=int, required=True, help="the most dynos")
    parser.add_argument("--p95", required=True, help="the p95 response time goal, like 500ms or 1s")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"Enabling autoscaling for {args.type} of {app}... ")
    policy = ctx.client().enable_autoscale(app, args.type, minimum=args.min, maximum=args.max, p95=args.p95)
    ctx.out(f"done, {policy['min']} to {policy['max']} dynos, p95 goal {policy['p95_goal_ms']:g} ms")
    return 0


def disable(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("ps:autoscale:disable", "Stop autoscaling; the dynos stay at their current quantity.")
    parser.add_argument("type", nargs="?", default="web")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.progress(f"Disabling autoscaling for {args.type} of {app}... ")
    ctx.client().disable_autoscale(app, args.type)
    ctx.out("done")
    return 0
