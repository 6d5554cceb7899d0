"""deploy [DIR]: pack a directory into a slug, upload it and release it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import UserError
from .command import Context
from .output import human_size
from .releases import upload_and_release


def pack_directory(src: Path, dest_dir: Path):  # noqa: ANN201 - dynod.build.slug.SlugInfo
    """dynod.build.slug's packer, imported only when a deploy happens (it is not a light import)."""
    from ..build.slug import pack_directory as pack

    return pack(src, dest_dir)


def deploy(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("deploy", "Deploy a directory (app source with its Procfile) as a new release.")
    parser.add_argument("dir", nargs="?", default=".", help="the app's directory (default: .)")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    src = Path(args.dir).resolve()
    if not src.is_dir():
        raise UserError(f"{args.dir} is not a directory: give the app's source directory.")
    with tempfile.TemporaryDirectory(prefix="dynoctl-deploy-") as workdir:
        ctx.progress(f"Packing {src}... ")
        slug = pack_directory(src, Path(workdir))
        types = ", ".join(sorted(slug.process_types)) or "no Procfile"
        ctx.out(f"done, {human_size(slug.size)} ({types})")
        release = upload_and_release(ctx, app, str(slug.path), None)
    app_info = ctx.client().get_app(app)
    ctx.out(f"{app_info['web_url']} deployed as v{release['version']}")
    return 0
