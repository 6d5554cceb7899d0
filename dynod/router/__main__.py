"""`python -m dynod.router --control PATH --http ADDR ... --state-dir DIR`: the router's parent."""

from __future__ import annotations

import sys

import trio

from ..errors import UserError
from .options import parse_args
from .supervisor import serve


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        trio.run(serve, options)
    except UserError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
