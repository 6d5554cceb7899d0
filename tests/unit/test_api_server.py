"""serve_api on a real unix socket, driven by the real ApiClient from a worker thread."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from dynod.api.attach import FrameType
from dynod.api.client import ApiClient
from dynod.api.server import serve_api
from dynod.errors import UserError
from tests.unit.fake_platform import FakePlatform

NO_SUCH_GROUP = "dynod-test-no-such-group"


@pytest.fixture
def short_dir() -> Any:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="dynod-api-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def api(short_dir: Path) -> AsyncIterator[tuple[FakePlatform, Path]]:
    platform = FakePlatform()
    await platform.create_app("myapp")
    async with trio.open_nursery() as nursery:
        path = await nursery.start(partial(serve_api, platform, short_dir / "api.sock", group=NO_SUCH_GROUP))
        yield platform, path
        nursery.cancel_scope.cancel()


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


async def test_json_round_trips_through_the_real_client(api: tuple[FakePlatform, Path]) -> None:
    platform, path = api
    client = ApiClient(path)

    def work() -> tuple[Any, ...]:
        created = client.create_app("second")
        config = client.update_config("myapp", {"A": "1", "B": "two words"})
        unset = client.update_config("myapp", {"A": None})
        releases = client.list_releases("myapp")
        maintenance = client.set_maintenance("myapp", True)
        client.destroy_app("second")
        return created, config, unset, releases, maintenance, client.list_apps()

    created, config, unset, releases, maintenance, apps = await in_thread(work)
    client.close()
    assert created["name"] == "second"
    assert config == {"A": "1", "B": "two words"} and unset == {"B": "two words"}
    assert [r["version"] for r in releases] == [1, 2]
    assert maintenance["maintenance"] is True
    assert [a["name"] for a in apps] == ["myapp"]


async def test_keep_alive_serves_several_requests_on_one_connection(api: tuple[FakePlatform, Path]) -> None:
    _, path = api

    def two_requests() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            request = b"GET /apps/myapp HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(request + request)
            data = b""
            while data.count(b'"name": "myapp"') < 2:
                chunk = sock.recv(65536)
                assert chunk, "server closed a keep-alive connection"
                data += chunk
            return data

    data = await in_thread(two_requests)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2


async def test_user_errors_keep_status_code_and_message(api: tuple[FakePlatform, Path]) -> None:
    _, path = api
    client = ApiClient(path)

    def fail(fn: Callable[[], Any]) -> UserError:
        with pytest.raises(UserError) as err:
            fn()
        return err.value

    missing = await in_thread(lambda: fail(lambda: client.get_app("ghost")))
    taken = await in_thread(lambda: fail(lambda: client.create_app("myapp")))
    bad = await in_thread(lambda: fail(lambda: client.update_formation("myapp", [{"type": "web", "quantity": -2}])))
    verb = await in_thread(lambda: fail(lambda: client.request("PUT", "/apps")))
    client.close()
    assert (missing.status, missing.code, str(missing)) == (404, "not_found", "Couldn't find that app: ghost.")
    assert (taken.status, taken.code) == (409, "conflict")
    assert bad.status == 422 and "from 0 to 100" in str(bad)
    assert verb.status == 405


async def test_a_handler_bug_is_a_500_and_the_server_lives_on(
        api: tuple[FakePlatform, Path], caplog: pytest.LogCaptureFixture) -> None:
    platform, path = api
    platform.fail_with = RuntimeError("boom")
    client = ApiClient(path)
    with pytest.raises(UserError) as err:
        await in_thread(lambda: client.list_apps())
    assert err.value.status == 500 and err.value.code == "internal_error"
    assert "RuntimeError" in str(err.value)
    assert "API GET /apps failed" in caplog.text
    assert [a["name"] for a in await in_thread(client.list_apps)] == ["myapp"]
    client.close()


async def test_malformed_http_gets_a_400(api: tuple[FakePlatform, Path]) -> None:
    _, path = api

    def garbage() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            sock.sendall(b"this is not http\r\n\r\n")
            return sock.recv(65536)

    assert (await in_thread(garbage)).startswith(b"HTTP/1.1 400")


async def test_slug_upload_is_streamed_to_the_platform(api: tuple[FakePlatform, Path], short_dir: Path) -> None:
    platform, path = api
    slug = short_dir / "slug.tgz"
    slug.write_bytes(gzip.compress(os.urandom(3 * 1024 * 1024)))
    client = ApiClient(path)
    info = await in_thread(lambda: client.upload_slug("myapp", slug))
    release = await in_thread(lambda: client.create_release("myapp", info["id"], "Deploy x"))
    client.close()
    assert platform.slugs[info["id"]] == slug.read_bytes()
    assert info["size"] == slug.stat().st_size
    assert release["slug"] == {"id": info["id"]} and release["version"] == 1


async def test_a_refused_upload_closes_instead_of_reading_the_rest(
        api: tuple[FakePlatform, Path], short_dir: Path) -> None:
    _, path = api
    slug = short_dir / "slug.tgz"
    slug.write_bytes(b"not gzip" * 100_000)
    client = ApiClient(path)
    with pytest.raises(UserError, match="not a gzip tarball"):
        await in_thread(lambda: client.upload_slug("myapp", slug))
    assert await in_thread(lambda: client.get_app("myapp"))
    client.close()


async def test_chunked_request_bodies_are_accepted(api: tuple[FakePlatform, Path]) -> None:
    platform, path = api
    payload = gzip.compress(b"slug")

    def chunked() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            body = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 5]), payload[i:i + 5])
                            for i in range(0, len(payload), 5)) + b"0\r\n\r\n"
            sock.sendall(b"POST /apps/myapp/slugs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n" + body)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    assert (await in_thread(chunked)).startswith(b"HTTP/1.1 201")
    assert list(platform.slugs.values()) == [payload]


async def test_logs_tail_streams_new_lines_until_the_client_leaves(api: tuple[FakePlatform, Path]) -> None:
    platform, path = api
    platform.emit_log("myapp", "old line")
    client = ApiClient(path)
    stream = client.tail_logs("myapp", lines=10)
    assert await in_thread(lambda: next(stream)) == "old line"
    platform.emit_log("myapp", "new line")
    assert await in_thread(lambda: next(stream)) == "new line"
    assert len(platform._log_listeners["myapp"]) == 1
    await in_thread(stream.close)
    with trio.fail_after(5):
        while platform._log_listeners["myapp"]:
            await trio.sleep(0.01)  # the server noticed the hang-up and closed the platform's iterator


async def test_logs_tail_ends_cleanly_when_the_stream_ends(api: tuple[FakePlatform, Path]) -> None:
    platform, path = api
    client = ApiClient(path)
    stream = client.tail_logs("myapp")
    received: list[str] = []

    async def read_all() -> None:
        received.extend(await in_thread(lambda: list(stream)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        with trio.fail_after(5):
            while not platform._log_listeners.get("myapp"):
                await trio.sleep(0.01)
        platform.emit_log("myapp", "last words")
        platform.end_log_streams("myapp")
    assert received == ["last words"]


async def test_stack_build_reports_progress_and_the_stack(api: tuple[FakePlatform, Path]) -> None:
    _, path = api
    client = ApiClient(path)
    progress: list[str] = []
    stack = await in_thread(lambda: client.build_stack("debian-13", progress.append))
    assert progress == ["debootstrap: minbase", "installing python3", "sealing"]
    assert stack["built"] is True
    with pytest.raises(UserError, match="No stack definition nope"):
        await in_thread(lambda: client.build_stack("nope", progress.append))


async def test_attach_pipes_stdin_and_returns_the_exit_code(api: tuple[FakePlatform, Path]) -> None:
    platform, path = api
    client = ApiClient(path)
    output: list[tuple[FrameType, bytes]] = []

    def run(command: str, stdin: bytes = b"") -> int:
        with client.run_attached("myapp", command, env={"A": "1"}) as session:
            return session.communicate(stdin, lambda kind, data: output.append((kind, data)))

    assert await in_thread(lambda: run("cat", b"hello\nworld\n")) == 0
    assert b"".join(d for _, d in output) == b"hello\nworld\n"
    assert platform.attached[-1].stdin_closed
    output.clear()
    assert await in_thread(lambda: run("err oops")) == 0
    assert output == [(FrameType.STDERR, b"oops\n")]
    assert await in_thread(lambda: run("exit 3")) == 3
    assert platform.calls[-1][0] == "run_attached" and platform.calls[-1][1][3] == {"A": "1"}


async def test_attach_sends_resize_frames_to_the_dyno(api: tuple[FakePlatform, Path]) -> None:
    platform, path = api
    client = ApiClient(path)
    output: list[bytes] = []

    def run() -> int:
        with client.run_attached("myapp", "sleep until-resized", tty=True, rows=30, cols=90) as session:
            session.resize(50, 132)
            return session.communicate(b"", lambda kind, data: output.append(data))

    assert await in_thread(run) == 0
    assert output == [b"resized 50x132\n"]
    dyno = platform.attached[-1]
    assert dyno.tty and dyno.resizes == [(50, 132)]


async def test_attach_refused_before_the_upgrade_is_an_ordinary_error(api: tuple[FakePlatform, Path]) -> None:
    _, path = api
    client = ApiClient(path)
    with pytest.raises(UserError, match="Couldn't find that app: ghost") as err:
        await in_thread(lambda: client.run_attached("ghost", "bash"))
    assert err.value.status == 404
    with pytest.raises(UserError, match="Unknown dyno size"):
        await in_thread(lambda: client.run_attached("myapp", "bash", size="huge"))


async def test_client_gone_kills_the_attached_dyno(api: tuple[FakePlatform, Path]) -> None:
    platform, path = api
    client = ApiClient(path)
    session = await in_thread(lambda: client.run_attached("myapp", "sleep"))
    dyno = platform.attached[-1]
    assert not dyno.killed
    session.close()
    with trio.fail_after(5):
        while not dyno.killed:
            await trio.sleep(0.01)


async def test_a_dyno_that_breaks_sends_an_error_frame(api: tuple[FakePlatform, Path]) -> None:
    platform, path = api
    client = ApiClient(path)
    with pytest.raises(UserError, match=r"dynod lost run\.\d+ \(RuntimeError\)"):
        await in_thread(lambda: client.run_attached("myapp", "crash").communicate())
    assert platform.attached[-1].killed


async def test_shutdown_answers_then_shuts_down(api: tuple[FakePlatform, Path]) -> None:
    platform, path = api
    await in_thread(lambda: ApiClient(path).shutdown(stop_dynos=True))
    assert platform.shutdowns == [True]


async def test_status(api: tuple[FakePlatform, Path]) -> None:
    _, path = api
    assert (await in_thread(ApiClient(path).status))["apps"] == 1


# --- the socket file --------------------------------------------------------------------------------


async def test_socket_is_0600_without_the_group_and_removed_on_exit(short_dir: Path) -> None:
    path = short_dir / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_api, FakePlatform(), path, group=NO_SUCH_GROUP))
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        nursery.cancel_scope.cancel()
    assert not path.exists()
    assert os.listdir(short_dir) == []  # no temporary name left behind


async def test_socket_is_0660_owned_by_the_group_when_it_exists(short_dir: Path) -> None:
    import grp

    group = grp.getgrgid(os.getgid()).gr_name  # a group that surely exists here
    path = short_dir / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_api, FakePlatform(), path, group=group))
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == os.getgid()
        nursery.cancel_scope.cancel()


async def test_a_stale_socket_is_replaced(short_dir: Path) -> None:
    path = short_dir / "api.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # bound, never listening: what a killed dynod leaves
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_api, FakePlatform(), path, group=NO_SUCH_GROUP))
        assert await in_thread(ApiClient(path).status)
        nursery.cancel_scope.cancel()


async def test_a_live_socket_is_never_stolen(api: tuple[FakePlatform, Path]) -> None:
    _, path = api
    with pytest.raises(UserError, match="already serving"):
        await serve_api(FakePlatform(), path, group=NO_SUCH_GROUP)
    assert await in_thread(ApiClient(path).status)  # the first server still answers


async def test_a_file_in_the_way_is_an_error(short_dir: Path) -> None:
    path = short_dir / "api.sock"
    path.write_text("not a socket")
    with pytest.raises(UserError, match="not a socket"):
        await serve_api(FakePlatform(), path, group=NO_SUCH_GROUP)
    assert path.read_text() == "not a socket"


def test_client_without_a_server_says_how_to_start_dynod(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        ApiClient(tmp_path / "missing.sock").list_apps()
    assert str(err.value) == (f"dynod is not running (no API socket at {tmp_path / 'missing.sock'}): "
                              "start it with `systemctl start dynod` or `dynod &`.")
    with pytest.raises(UserError, match="dynod is not running"):
        ApiClient(tmp_path / "missing.sock").run_attached("myapp", "bash")
