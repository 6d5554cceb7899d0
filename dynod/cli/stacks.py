"""stacks, stacks:build [NAME]: the shared base root filesystems dynos run on."""

from __future__ import annotations

from ..errors import UserError
from .command import Context
from .output import header, human_size, table


def show(ctx: Context, argv: list[str]) -> int:
    ctx.parse(ctx.parser("stacks", "List the stacks and whether they are built.", app=False), argv)
    stacks = ctx.client().list_stacks()
    rows = [(s["name"] + (" (default)" if s.get("default") else ""), "yes" if s.get("built") else "no",
             human_size(s.get("size_bytes")), s.get("hash") or "-") for s in stacks]
    ctx.out(header("Stacks"))
    for line in table(("Stack", "Built", "Size", "Hash"), rows):
        ctx.out(line)
    return 0


def build(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("stacks:build", "Build a stack (default: the default one); takes minutes.", app=False)
    parser.add_argument("name", nargs="?")
    args = ctx.parse(parser, argv)
    client = ctx.client()
    name = args.name
    if name is None:
        default = next((s["name"] for s in client.list_stacks() if s.get("default")), None)
        if default is None:
            raise UserError("No default stack is configured: name the stack to build.")
        name = default
    ctx.out(f"Building stack {name}...")

    def progress(line: str) -> None:
        ctx.out(f"       {line}")
        ctx.stdout.flush()

    stack = client.build_stack(name, progress)
    size = human_size(stack.get("size_bytes"))
    ctx.out(f"Built stack {stack['name']} ({stack.get('hash') or 'no hash'}), {size}")
    return 0
