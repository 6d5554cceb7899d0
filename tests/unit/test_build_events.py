"""Build events: what a build reports while it runs, one encode and one decode each, and the
API's build stream written with them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dynod.api.routes import ApiRoutes, Request, StreamResponse
from dynod.builds.events import BuildFailed, BuildFinished, BuildOutput, build_finished, decode_build_event
from dynod.errors import UserError

RECORD = {"id": "18a3c0f2e1b4d000-1f2e3d4c", "app": "myapp", "status": "succeeded", "source": "git",
          "release": 4, "error": None, "web_url": "http://myapp.localhost/", "buildpacks": ["python"]}


def test_each_event_decodes_to_what_was_encoded() -> None:
    for event in (BuildOutput("-----> Python app detected"), BuildOutput(""), BuildOutput("caf\u00e9 \x1b[1m"),
                  build_finished(RECORD), build_finished({**RECORD, "status": "failed", "release": None,
                                                         "error": "No buildpack detected"}),
                  BuildFailed(id="not_found", message="Couldn't find that app.")):
        line = event.encode()
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert decode_build_event(line) == event


def test_the_wire_shapes_are_the_ones_the_stream_has_always_had() -> None:
    # git's pre-receive hook and older dynoctl read these keys.
    assert json.loads(BuildOutput("x").encode()) == {"line": "x"}
    assert json.loads(build_finished(RECORD).encode()) == {"build": RECORD}
    assert json.loads(BuildFailed("internal_error", "boom").encode()) == {
        "error": {"id": "internal_error", "message": "boom"}}
    finished = decode_build_event(json.dumps({"build": RECORD}))
    assert isinstance(finished, BuildFinished) and finished.succeeded and finished.release == 4
    assert finished.web_url == "http://myapp.localhost/" and finished.record == RECORD


@pytest.mark.parametrize("raw", [
    b'{"line": "cut mid-li', b"[]", b'"line"', b'{"line": 3}', b'{"line": "a", "build": {}}',
    b'{"build": {"release": 3}}', b'{"build": {"status": "succeeded", "release": "3"}}',
    b'{"build": {"status": "succeeded", "release": true}}', b'{"error": {"id": "x"}}', b'{"progress": 50}', b"",
])
def test_a_line_that_is_no_event_is_one_clear_error(raw: bytes) -> None:
    one_line = r"^The build stream from dynod is broken \(.*\); see `dynoctl builds:output`\.$"
    with pytest.raises(UserError, match=one_line) as err:
        decode_build_event(raw)
    assert err.value.code == "stream_broken"


class _Body:
    async def chunks(self) -> AsyncIterator[bytes]:
        yield b"source"

    async def read(self, limit: int) -> bytes:
        return b"source"


class _Platform:
    """Just the two calls the build route makes."""

    def __init__(self, fail: UserError | None = None) -> None:
        self.fail = fail

    async def get_app(self, app: str) -> dict[str, Any]:
        return {"name": app}

    async def build_source(self, app: str, archive: Any, *, source: str, source_version: str | None,
                           user: str | None, output: Any) -> dict[str, Any]:
        output("-----> Building on the debian-13 stack")
        output("       Done")
        if self.fail is not None:
            raise self.fail
        return RECORD


async def _stream(platform: _Platform) -> list[bytes]:
    response = await ApiRoutes(platform).dispatch(  # type: ignore[arg-type]
        Request("POST", "/apps/myapp/builds", {"source": "git"}, {}, _Body()))
    assert isinstance(response, StreamResponse) and response.content_type == "application/x-ndjson"
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(data)

    await response.produce(write)
    return written


async def test_the_build_stream_is_output_events_then_the_finished_build() -> None:
    events = [decode_build_event(line) for line in await _stream(_Platform())]
    assert events == [BuildOutput("-----> Building on the debian-13 stack"), BuildOutput("       Done"),
                      build_finished(RECORD)]


async def test_a_build_dynod_could_not_run_ends_in_the_failed_event() -> None:
    events = [decode_build_event(line)
              for line in await _stream(_Platform(UserError("Couldn't find that app.", status=404, code="not_found")))]
    assert events[-1] == BuildFailed(id="not_found", message="Couldn't find that app.")
    assert events[:-1] == [BuildOutput("-----> Building on the debian-13 stack"), BuildOutput("       Done")]


def test_the_events_module_needs_only_the_standard_library() -> None:
    # The git pre-receive hook and dynoctl decode the stream with it.
    import subprocess
    import sys

    code = ("import sys; before = set(sys.modules); import dynod.builds.events; added = set(sys.modules) - before; "
            "print(sorted({m.split('.')[0] for m in added} - set(sys.stdlib_module_names)), "
            "sorted(m for m in added if m.startswith('dynod')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(["dynod"]) + " " + str(
        ["dynod", "dynod.builds", "dynod.builds.events", "dynod.errors", "dynod.exports"])


# The git pre-receive hook reads the stream with the same decoder (dynod/builds/git.py).

def _hook_against(tmp_path, lines: list[bytes]) -> tuple[bool, str]:
    import http.server
    import io
    import secrets
    import socketserver
    import threading

    from dynod.builds.git import request_build

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            for line in lines:
                self.wfile.write(line)

        def log_message(self, *args: object) -> None:
            pass

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

        def get_request(self):  # BaseHTTPRequestHandler wants an address pair
            conn, _ = self.socket.accept()
            return conn, ("local", 0)

    socket_path = tmp_path / f"api-{secrets.token_hex(4)}.sock"
    server = Server(str(socket_path), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = io.StringIO()
        ok = request_build(socket_path, "myapp", io.BytesIO(b"tar"), 3, source_version="a" * 40, user=None,
                           out=out, timeout=10)
        return ok, out.getvalue()
    finally:
        server.shutdown()
        server.server_close()


def test_the_push_hook_prints_each_line_and_the_release(tmp_path) -> None:
    ok, said = _hook_against(tmp_path, [BuildOutput("-----> Python app detected").encode(),
                                        build_finished(RECORD).encode()])
    assert ok
    assert "-----> Python app detected" in said and "Released v4" in said
    assert "http://myapp.localhost/ deployed to dynod" in said


def test_the_push_hook_rejects_on_a_failed_event_or_a_garbled_line_in_one_line(tmp_path) -> None:
    ok, said = _hook_against(tmp_path, [BuildFailed("not_found", "Couldn't find that app.").encode()])
    assert not ok and said.strip().endswith("Push rejected: Couldn't find that app.")
    ok, said = _hook_against(tmp_path, [BuildOutput("x").encode(), b'{"line": "cut mid-'])
    assert not ok and "The build stream from dynod is broken (a line is not JSON)" in said
    assert "Traceback" not in said and said.count("!") == 1
