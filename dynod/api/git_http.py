"""git over HTTPS: ``git push https://HOST:PORT/APP.git main`` with an API token as the password,
as Heroku's git endpoint takes it, on the TCP+TLS listener (docs/api.md).

Git's "smart HTTP" protocol is two requests per push, each answered by git itself:

    GET  /APP.git/info/refs?service=git-receive-pack   -> git receive-pack --stateless-rpc --advertise-refs
    POST /APP.git/git-receive-pack                     -> git receive-pack --stateless-rpc

(and the same with ``git-upload-pack`` for clone and fetch). The push runs the app repository's
pre-receive hook exactly as an SSH push does (dynod/builds/git.py): the build streams back as
``remote:`` lines while it runs, and a failed build rejects the push. The pusher's email names
the build (``DYNOD_PUSHER``, which the hook reads). Access is the app's rule: owner or
collaborator. The pack is spooled to a temporary file first (bounded like a source archive,
gzip bodies inflated with the same bound) because the server finishes reading a request before a
streamed answer starts; then git reads it while its answer streams back.
"""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path
from typing import IO

import trio

from ..errors import NotFound, UserError
from .routes import Request, StreamResponse, Write

SERVICES = ("git-receive-pack", "git-upload-pack")
MAX_PACK_BYTES = 1 << 30  # as a source archive: a push larger than a slug can hold cannot deploy
CHUNK = 64 * 1024


def parse_git_path(path: str) -> tuple[str, str] | None:
    """'/APP.git/info/refs' -> (APP, 'info/refs'); None when the path is not git's."""
    parts = path.strip("/").split("/", 1)
    if len(parts) != 2 or not parts[0].endswith(".git") or len(parts[0]) <= 4:
        return None
    return parts[0][:-4], parts[1]


def _pkt_line(text: str) -> bytes:
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


async def advertise(repo: Path, service: str) -> StreamResponse:
    if service not in SERVICES:
        raise UserError(f"Unknown git service {service[:40]!r}: dynod speaks git-receive-pack and git-upload-pack.",
                        status=403, code="forbidden")
    result = await trio.run_process(["git", service.removeprefix("git-"), "--stateless-rpc", "--advertise-refs",
                                     str(repo)], capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        raise UserError(f"git could not read the app's repository ({result.stderr.decode(errors='replace')[:200]}).",
                        status=500, code="internal_error")
    data = _pkt_line(f"# service={service}\n") + b"0000" + result.stdout

    async def produce(write: Write) -> None:
        await write(data)

    return StreamResponse(produce, content_type=f"application/x-{service}-advertisement")


async def spool(request: Request) -> IO[bytes]:
    """The request body in a temporary file, inflated when git sent it gzip'ed; bounded."""
    gzipped = request.headers.get("content-encoding", "").lower() in ("gzip", "x-gzip")
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 16) if gzipped else None
    spooled = tempfile.TemporaryFile(prefix="dynod-push-")
    size = 0
    try:
        async for chunk in request.body.chunks():
            try:
                data = inflate.decompress(chunk, MAX_PACK_BYTES) if inflate is not None else chunk
            except zlib.error:
                raise UserError("The push's gzip body is corrupt.", status=400, code="bad_request") from None
            size += len(data)
            if size > MAX_PACK_BYTES:
                raise UserError("The push is over 1 GB: add large files to .gitignore.", status=413, code="too_large")
            await trio.to_thread.run_sync(spooled.write, data)
        spooled.seek(0)
    except BaseException:
        spooled.close()
        raise
    return spooled


async def rpc(repo: Path, service: str, body: IO[bytes], *, pusher: str) -> StreamResponse:
    """Run the service on the spooled body; its output streams back as git's result."""
    if service not in SERVICES:
        raise NotFound(f"No such git endpoint {service[:40]!r}.")
    argv = ["git", service.removeprefix("git-"), "--stateless-rpc", str(repo)]

    async def produce(write: Write) -> None:
        client_here = True

        async def send(data: bytes) -> None:
            nonlocal client_here
            if client_here:
                try:
                    await write(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    client_here = False  # the push still finishes: a half-done deploy helps nobody

        import os
        import subprocess

        # DYNOD_PUSHER names the (already authorized) pusher for the hook; DYNOD_KEY_ID would ask
        # it to authorize an SSH key, which an HTTPS push has none of.
        env = {k: v for k, v in os.environ.items() if k != "DYNOD_KEY_ID"}
        env.update(DYNOD_PUSHER=pusher, GIT_HTTP_EXPORT_ALL="1")
        process = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                   stderr=subprocess.DEVNULL, env=env)
        try:
            async with trio.open_nursery() as nursery:
                async def feed() -> None:
                    assert process.stdin is not None
                    try:
                        while data := await trio.to_thread.run_sync(body.read, CHUNK):
                            await process.stdin.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # git stopped reading (a refused push): its answer says why
                    finally:
                        await process.stdin.aclose()

                nursery.start_soon(feed)
                assert process.stdout is not None
                while data := await process.stdout.receive_some(CHUNK):
                    await send(data)
            await process.wait()
        finally:
            body.close()
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()

    return StreamResponse(produce, content_type=f"application/x-{service}-result", stop_when_client_leaves=False)
