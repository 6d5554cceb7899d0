"""keys, keys:add [FILE], keys:remove KEY: the SSH keys that may `git push` to dynod."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from .command import Context


def show(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("keys", "List the SSH keys that may git push.", app=False)
    ctx.parse(parser, argv)
    keys = ctx.client().list_keys()
    ctx.out("=== SSH keys")
    for key in keys:
        ctx.out(f"{key.get('fingerprint', '')}  {key.get('comment', '')}")
    return 0


def add(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("keys:add", "Allow an SSH public key to git push (default: ~/.ssh/id_*.pub).", app=False)
    parser.add_argument("file", nargs="?", help="the public key file, or - for stdin")
    args = ctx.parse(parser, argv)
    if args.file == "-":
        text = sys.stdin.read()
    else:
        path = Path(args.file) if args.file else _default_key()
        try:
            text = path.read_text()
        except OSError as exc:
            raise UserError(f"Cannot read {path}: {exc.strerror}; give a public key file.") from None
    key = ctx.client().add_key(text)
    ctx.out(f"Added key {key.get('fingerprint', '')} {key.get('comment', '')}".rstrip())
    return 0


def remove(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("keys:remove", "Stop a key from pushing: keys:remove FINGERPRINT|COMMENT.", app=False)
    parser.add_argument("key")
    args = ctx.parse(parser, argv)
    ctx.client().remove_key(args.key)
    ctx.out(f"Removed key {args.key}")
    return 0


def _default_key() -> Path:
    for name in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
        path = Path.home() / ".ssh" / name
        if path.exists():
            return path
    raise UserError("No ~/.ssh/id_*.pub found: make one with ssh-keygen or give the key file.")


def git_remote(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("git:remote", "Add a git remote named dynod for the app.")
    parser.add_argument("--ssh-host", help="push over SSH to git@HOST (default: the local repository)")
    parser.add_argument("-r", "--remote", default="dynod", help="the remote's name (default: dynod)")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.client().get_app(app)
    import subprocess

    if args.ssh_host:
        url = f"ssh://git@{args.ssh_host}/{app}.git"
    else:
        state = Path("/var/lib/dynod")
        url = str(state / "repos" / f"{app}.git")
    existing = subprocess.run(["git", "remote", "get-url", args.remote], capture_output=True, text=True)
    verb = "set-url" if existing.returncode == 0 else "add"
    result = subprocess.run(["git", "remote", verb, args.remote, url], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"git remote {verb} failed: {result.stderr.strip() or 'is this a git repository?'}")
    ctx.out(f"set git remote {args.remote} to {url}")
    return 0
