"""deploy [DIR]: build a directory's source with buildpacks and release it (Heroku's source builds).

`deploy --no-build DIR` skips the buildpacks: DIR already holds a runnable app and is packed into a
slug as it is. builds / builds:output show past builds.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

from ..errors import UserError
from .command import Context
from .output import human_size
from .releases import upload_and_release

SKIP = {".git", ".hg", ".svn"}


def pack_directory(src: Path, dest_dir: Path):  # noqa: ANN201 - dynod.builds.slug.SlugInfo
    """dynod.builds.slug's packer, imported only when a deploy happens (it is not a light import)."""
    from ..builds.slug import pack_directory as pack

    return pack(src, dest_dir)


def pack_source(src: Path, dest: Path) -> int:
    """The source as a tar.gz (version-control dirs left out); returns its size."""
    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        for base, dirs, files in os.walk(src):
            dirs[:] = sorted(d for d in dirs if d not in SKIP)
            for name in sorted(dirs) + sorted(files):
                path = Path(base) / name
                tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    return dest.stat().st_size


def deploy(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("deploy", "Build a directory's source with buildpacks and release it.")
    parser.add_argument("dir", nargs="?", default=".", help="the app's directory (default: .)")
    parser.add_argument("--no-build", action="store_true",
                        help="release DIR as it is (a runnable app with a Procfile), without buildpacks")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    src = Path(args.dir).resolve()
    if not src.is_dir():
        raise UserError(f"{args.dir} is not a directory: give the app's source directory.")
    with tempfile.TemporaryDirectory(prefix="dynoctl-deploy-") as workdir:
        if args.no_build:
            ctx.progress(f"Packing {src}... ")
            slug = pack_directory(src, Path(workdir))
            types = ", ".join(sorted(slug.process_types)) or "no Procfile"
            ctx.out(f"done, {human_size(slug.size)} ({types})")
            release = upload_and_release(ctx, app, str(slug.path), None)
            ctx.out(f"{ctx.client().get_app(app)['web_url']} deployed as v{release['version']}")
            return 0
        archive = Path(workdir) / "source.tar.gz"
        ctx.progress(f"Uploading source {src}... ")
        size = pack_source(src, archive)
        ctx.out(f"done, {human_size(size)}")
        return stream_build(ctx, app, archive)


def stream_build(ctx: Context, app: str, archive: Path) -> int:
    # dynod.builds.events is stdlib-only, but only a build needs it: not loaded for other commands.
    from ..builds.events import BuildFailed, BuildFinished, BuildOutput

    final: BuildFinished | BuildFailed | None = None
    for event in ctx.client().build(app, archive):
        if isinstance(event, BuildOutput):
            ctx.out(event.line)
            ctx.stdout.flush()  # a build is read as it happens, even through a pipe (as git push shows it)
        else:
            final = event
    if isinstance(final, BuildFailed):
        raise UserError(final.message)
    if final is None or not final.succeeded:
        raise UserError(f"Build failed: {(final and final.error) or 'see the output above'}.")
    ctx.out(f"{final.web_url or ''} deployed as v{final.release}")
    return 0


def builds(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("builds", "List the app's builds, newest first.")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    records = ctx.client().list_builds(app)
    ctx.out(f"=== {app} Builds")
    for record in records:
        release = f"v{record['release']}" if record.get("release") else ""
        ctx.out(f"{record['id']}  {record['status']:<9}  {record.get('source', '')}  {release}")
    return 0


def builds_output(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("builds:output", "Show a build's output (default: the latest).")
    parser.add_argument("id", nargs="?", help="the build's id (see `dynoctl builds`)")
    args = ctx.parse(parser, argv)
    ctx.stdout.write(ctx.client().build_output(ctx.app(args), args.id))
    return 0
