"""buildpacks, buildpacks:add, :set, :remove, :clear: the app's buildpack list, as Heroku's CLI edits it.

The list lives in dynod (``GET/PUT /apps/{app}/buildpack-installations``) and is replaced whole, so
an edit is: read the list, change it here (pure functions, tested without a server), write it back.
dynod checks every entry (a URL, a name like heroku/python, a directory under the operator's
roots) and refuses the whole list in one line otherwise. Changing it is not a release: the next
build uses it, ahead of the BUILDPACK_URL config var and the app's .buildpacks file.
"""

from __future__ import annotations

from ..errors import UserError
from .command import Context
from .output import header
from .parser import CommandParser

TYPE_CHECKING = False  # typing itself is not imported: dynoctl's start-up (docs/dynos.md)
if TYPE_CHECKING:
    from collections.abc import Callable

PUSH = "git push dynod main"  # dynoctl git:remote names the remote dynod


# --- editing the list (Heroku CLI's rules; indexes are 1-based) -----------------------------------


def _check_new(urls: list[str], url: str) -> None:
    if url in urls:
        raise UserError(f"The buildpack {url} is already set on your app.")


def _check_index(index: int | None) -> None:
    if index is not None and index <= 0:
        raise UserError("Invalid index. Must be greater than 0.")


def _check_in_range(urls: list[str], index: int, highest: int) -> None:
    if index > highest:
        choices = "Only valid value is 1." if highest == 1 else f"Please choose a value between 1 and {highest}."
        raise UserError(f"Invalid index. {choices}")


def added(urls: list[str], url: str, index: int | None) -> list[str]:
    """``url`` inserted before the one at ``index`` (at the end without one, or at len + 1)."""
    _check_index(index)
    _check_new(urls, url)
    if index is None:
        return [*urls, url]
    _check_in_range(urls, index, len(urls) + 1)
    return [*urls[: index - 1], url, *urls[index - 1:]]


def replaced(urls: list[str], url: str, index: int | None) -> list[str]:
    """``url`` in place of the one at ``index``; without one, in place of the first (Heroku's CLI
    does exactly this: the rest stay; buildpacks:clear starts over). len + 1 appends."""
    _check_index(index)
    _check_new(urls, url)
    position = 1 if index is None else index
    _check_in_range(urls, position, len(urls) + 1)
    return [*urls[: position - 1], url, *urls[position:]]


def removed(urls: list[str], url: str | None, index: int | None, app: str) -> list[str]:
    if index is not None and url:
        raise UserError("Please choose either index or Buildpack, but not both.")
    if index is None and not url:
        raise UserError("Usage: dynoctl buildpacks:remove [BUILDPACK_URL]. Must specify a buildpack to remove, "
                        "either by index or URL.")
    if not urls:
        raise UserError(f"No buildpacks were found. Next release on {app} will detect buildpack normally.")
    if index is not None:
        _check_index(index)
        _check_in_range(urls, index, len(urls))
        position = index - 1
    elif url in urls:
        position = urls.index(url)
    else:
        raise UserError("Buildpack not found. Nothing was removed.")
    return [*urls[:position], *urls[position + 1:]]


# --- what is printed ------------------------------------------------------------------------------


def listing(app: str, urls: list[str]) -> list[str]:
    if not urls:
        return [f"{app} has no Buildpack URL set."]
    if len(urls) == 1:
        return [header(f"{app} Buildpack URL"), urls[0]]
    return [header(f"{app} Buildpack URLs"), *(f"{i}. {url}" for i, url in enumerate(urls, 1))]


def update_message(app: str, urls: list[str], action: str) -> list[str]:
    """After add/set/remove that leaves at least one buildpack."""
    if len(urls) == 1:
        return [f"Buildpack {action}. Next release on {app} will use {urls[0]}.",
                f"Run {PUSH} to create a new release using this buildpack."]
    return [f"Buildpack {action}. Next release on {app} will use:",
            *(f"  {i}. {url}" for i, url in enumerate(urls, 1)),
            f"Run {PUSH} to create a new release using these buildpacks."]


def cleared_message(app: str, what: str, config: dict[str, str]) -> tuple[str, str | None]:
    """(stdout line, warning or None) once the list is empty: what the next build will use."""
    if config.get("BUILDPACK_URL", "").strip():
        return what, "The BUILDPACK_URL config var is still set and will be used for the next release"
    return f"{what} Next release on {app} will detect buildpacks normally.", None


# --- the commands ---------------------------------------------------------------------------------


def show(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("buildpacks", "Show the app's buildpacks, in the order its builds run them.")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    for line in listing(app, ctx.client().get_buildpacks(app)):
        ctx.out(line)
    return 0


def _edit_parser(ctx: Context, command: str, description: str, *, url_required: bool = True) -> CommandParser:
    parser = ctx.parser(command, description)
    parser.add_argument("buildpack", nargs=None if url_required else "?",
                        help="a git URL, a name like heroku/python or heroku-community/apt, or a local directory")
    parser.add_argument("-i", "--index", type=int, help="the 1-based position in the list")
    return parser


def _edit(ctx: Context, argv: list[str], command: str, description: str, verb: str,
          change: Callable[[list[str], str, int | None], list[str]]) -> int:
    """buildpacks:add and :set: read the list, change it, store it, say what it is now."""
    args = ctx.parse(_edit_parser(ctx, command, description), argv)
    app = ctx.app(args)
    client = ctx.client()
    urls = client.set_buildpacks(app, change(client.get_buildpacks(app), args.buildpack, args.index))
    for line in update_message(app, urls, verb):
        ctx.out(line)
    return 0


def add(ctx: Context, argv: list[str]) -> int:
    return _edit(ctx, argv, "buildpacks:add", "Add a buildpack, at the end or before the one at --index.",
                 "added", added)


def set_buildpack(ctx: Context, argv: list[str]) -> int:
    return _edit(ctx, argv, "buildpacks:set", "Set the buildpack at --index (default: the first).",
                 "set", replaced)


def remove(ctx: Context, argv: list[str]) -> int:
    parser = _edit_parser(ctx, "buildpacks:remove", "Remove a buildpack, named or by --index.",
                          url_required=False)
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    client = ctx.client()
    urls = client.set_buildpacks(app, removed(client.get_buildpacks(app), args.buildpack, args.index, app))
    if urls:
        for line in update_message(app, urls, "removed"):
            ctx.out(line)
    else:
        _say_cleared(ctx, app, "Buildpack removed.")
    return 0


def clear(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("buildpacks:clear", "Remove every buildpack: the next build detects them.")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    ctx.client().set_buildpacks(app, [])
    _say_cleared(ctx, app, "Buildpacks cleared.")
    return 0


def _say_cleared(ctx: Context, app: str, what: str) -> None:
    line, warning = cleared_message(app, what, ctx.client().get_config(app))
    ctx.out(line)
    if warning is not None:
        ctx.stderr.write(f" ▸    {warning}\n")
