"""routing:policy [random|p2c]: how the router picks a web dyno for each request of the app."""

from __future__ import annotations

from .command import Context


def policy(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("routing:policy", "Show or set the app's routing policy: random (Heroku's) or p2c.")
    parser.add_argument("policy", nargs="?", choices=("random", "p2c"),
                        help="random: any up web dyno; p2c: the less busy of two random ones")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    client = ctx.client()
    info = client.set_routing_policy(app, args.policy) if args.policy else client.get_app(app)
    ctx.out(f"{app} routing policy: {info.get('routing_policy', 'random')}")
    return 0
