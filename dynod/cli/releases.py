"""releases, releases:info, releases:rollback, releases:create."""

from __future__ import annotations

from ..errors import UserError
from .command import Context
from .output import header, key_values, time_ago

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import tzinfo

    from ..api.client import Json


def parse_version(text: str) -> int:
    """``v3`` or ``3`` -> 3."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise UserError(f"{text!r} is not a release version: write it like v3.")
    return int(digits)


def describe(release: Json) -> str:
    """The description column, with the state of a release that is not live (yet)."""
    status = release.get("status", "succeeded")
    if status == "pending":
        return f"{release['description']} (release command executing)"
    if status == "failed":
        return f"{release['description']} (release command failed)"
    return release["description"]


def format_releases(app: str, releases: list[Json], now: float, tz: tzinfo | None = None) -> list[str]:
    current = next((r["version"] for r in releases if r.get("current")), None)
    lines = [header(f"{app} Releases - Current: {f'v{current}' if current else 'none'}")]
    newest_first = sorted(releases, key=lambda r: r["version"], reverse=True)
    versions = [f"v{r['version']}" for r in newest_first]
    descriptions = [describe(r) for r in newest_first]
    # Heroku's layout names who made each release; a dynod too old to say leaves the column out.
    users = [(r.get("user") or {}).get("email", "") for r in newest_first]
    vwidth = max(map(len, versions), default=0)
    dwidth = max(map(len, descriptions), default=0)
    uwidth = max(map(len, users), default=0)
    for version, description, user, release in zip(versions, descriptions, users, newest_first, strict=True):
        when = time_ago(release.get("created_at"), now, tz)
        by = f"{user:<{uwidth}}  " if uwidth else ""
        lines.append(f"{version:<{vwidth}}  {description:<{dwidth}}  {by}{when}".rstrip())
    return lines


def format_release_info(release: Json, now: float, tz: tzinfo | None = None) -> list[str]:
    slug = release.get("slug") or {}
    process_types = release.get("process_types") or {}
    return [header(f"Release v{release['version']}")] + key_values([
        ("Change", describe(release)),
        *([("By", release["user"]["email"])] if (release.get("user") or {}).get("email") else []),
        ("Status", release.get("status", "succeeded")),
        ("Slug", slug.get("id", "none")),
        ("Add-ons", ", ".join(f"{a['name']} as {a['attachment']} ({a['plan']['name']})"
                              for a in release.get("addons") or []) or "none"),
        ("Process Types", ", ".join(sorted(process_types)) or "none"),
        ("Config Vars", ", ".join(release.get("config_var_names") or []) or "none"),
        ("When", time_ago(release.get("created_at"), now, tz)),
        ("Current", "yes" if release.get("current") else "no"),
    ])


def list_releases(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("releases", "List an app's releases, newest first."), argv)
    app = ctx.app(args)
    for line in format_releases(app, ctx.client().list_releases(app), ctx.now(), ctx.tz):
        ctx.out(line)
    return 0


def info(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("releases:info", "Show one release (default: the current one).")
    parser.add_argument("release", nargs="?", metavar="vN")
    args = ctx.parse(parser, argv)
    version = parse_version(args.release) if args.release else None
    release = ctx.client().get_release(ctx.app(args), version)
    for line in format_release_info(release, ctx.now(), ctx.tz):
        ctx.out(line)
    return 0


def rollback(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("releases:rollback",
                        "Release an old release's slug and config again (default: the previous one).")
    parser.add_argument("release", nargs="?", metavar="vN")
    args = ctx.parse(parser, argv)
    version = parse_version(args.release) if args.release else None
    app = ctx.app(args)
    ctx.progress(f"Rolling back {app} to {args.release or 'the previous release'}... ")
    release = ctx.client().rollback(app, version)
    ctx.out(f"done, v{release['version']}")
    if release.get("warning"):  # the add-on sets differ: a rollback never changes add-ons
        ctx.out(f" !    {release['warning']}")
    return 0


def create(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("releases:create", "Upload a slug (tar.gz of app/) and release it.")
    parser.add_argument("--slug", required=True, metavar="FILE", help="the slug tarball")
    parser.add_argument("--description", help="the release's description (default: Deploy <sha>)")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    release = upload_and_release(ctx, app, args.slug, args.description)
    ctx.out(f"Released v{release['version']} of {app}.")
    return 0


def upload_and_release(ctx: Context, app: str, slug_path: str, description: str | None) -> Json:
    client = ctx.client()
    ctx.progress("Uploading slug... ")
    slug = client.upload_slug(app, slug_path)
    ctx.out(f"done, {slug['id'][:12]}")
    ctx.progress(f"Releasing {app}... ")
    release = client.create_release(app, slug["id"], description or f"Deploy {slug['id'][:6]}")
    ctx.out(f"done, v{release['version']}")
    return release
