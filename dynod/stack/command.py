"""The stack command line (used by install.sh and bench/): python -m dynod.stack build|path|list."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from .store import StackStore


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        print(f"error: {message} (see python -m dynod.stack --help)", file=sys.stderr)
        sys.exit(2)


def _store_from_args(args: argparse.Namespace) -> StackStore:
    from ..settings import load_settings

    settings = load_settings(Path(args.config) if args.config else None)
    stacks_dir = Path(args.stacks_dir) if args.stacks_dir else settings.stacks_dir
    return StackStore(stacks_dir, default=settings.stack, uid=settings.dynos.uid, gid=settings.dynos.gid)


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m dynod.stack", description="Build and list dynod stacks.")
    parser.add_argument("--config", help="dynod.toml (default: $DYNOD_CONFIG or /etc/dynod/dynod.toml)")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_OneLineParser)
    build = verbs.add_parser("build", help="build a stack and its build image (the default one without NAME)")
    build.add_argument("name", nargs="?", metavar="NAME")
    build.add_argument("--stacks-dir", metavar="DIR")
    build.add_argument("--force", action="store_true", help="rebuild even if built")
    where = verbs.add_parser("path", help="print a built stack's rootfs dir (the default one without NAME)")
    where.add_argument("name", nargs="?", metavar="NAME")
    where.add_argument("--stacks-dir", metavar="DIR")
    listing = verbs.add_parser("list", help="list stack definitions and whether they are built")
    listing.add_argument("--stacks-dir", metavar="DIR")
    listing.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        store = _store_from_args(args)
        if args.verb == "build":
            name = args.name or store.default
            # A stack and the build image builds of it run on (debian-13 and debian-13-build).
            for each in dict.fromkeys([name, store.build_image(name)]):
                path = store.build(each, lambda line: print(line, flush=True), force=args.force)
                print(path)
        elif args.verb == "path":
            print(store.path(args.name or store.default))
        else:
            stacks = store.list()
            if args.json:
                print(json.dumps(stacks, indent=2))
            else:
                print(f"{'NAME':<16} {'HASH':<12} {'BUILT':<5} {'SIZE':>8}  PATH")
                for s in stacks:
                    size = f"{s['size_bytes'] / 1e6:.0f} MB" if s["size_bytes"] else "-"
                    mark = "*" if s["default"] else " "
                    print(f"{s['name'] + mark:<16} {s['hash'][:12]:<12} {'yes' if s['built'] else 'no':<5} "
                          f"{size:>8}  {s['path'] or '-'}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; the partial build was removed.", file=sys.stderr)
        return 130
    return 0
