"""dynoctl end to end: main() in a worker thread against serve_api with the fake platform."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import termios
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from dynod.api.server import serve_api
from dynod.cli import main
from tests.unit.fake_platform import FakePlatform


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakePlatform, Path]]:
    directory = Path(tempfile.mkdtemp(prefix="dynod-cli-", dir="/tmp"))
    platform = FakePlatform()
    await platform.create_app("myapp")
    try:
        async with trio.open_nursery() as nursery:
            path = await nursery.start(partial(serve_api, platform, directory / "api.sock",
                                               group="dynod-test-no-such-group"))
            yield platform, path
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Cli:
    def __init__(self, socket: Path) -> None:
        self.environ = {"DYNOD_SOCKET": str(socket), "DYNOD_APP": "myapp"}

    async def __call__(self, *argv: str, stdin: str = "", fds: tuple[int, int, int] = (0, 1, 2),
                       ) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await trio.to_thread.run_sync(lambda: main(
            list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin), environ=self.environ, fds=fds))
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli(api: tuple[FakePlatform, Path]) -> Cli:
    return Cli(api[1])


async def test_apps_create_info_and_destroy_with_confirmation(cli: Cli, api: tuple[FakePlatform, Path]) -> None:
    platform, _ = api
    assert await cli("apps:create", "blog") == (0, "Creating blog... done, blog\nhttp://blog.localhost/\n", "")
    code, out, _ = await cli("apps:info", "-a", "blog")
    assert code == 0 and "=== blog" in out and "Web URL:     http://blog.localhost/" in out
    code, _, err = await cli("apps:destroy", "-a", "blog", stdin="wrong\n")
    assert code == 1 and "did not match blog: nothing was destroyed" in err
    assert "blog" in platform.apps and not platform.called("destroy_app")
    code, out, _ = await cli("apps:destroy", "-a", "blog", stdin="blog\n")
    assert code == 0 and "blog" not in platform.apps
    assert (await cli("apps:destroy", "--confirm", "myapp"))[0] == 0


async def test_server_errors_are_one_line_exit_1(cli: Cli) -> None:
    assert await cli("apps:info", "-a", "ghost") == (1, "", " !    Couldn't find that app: ghost.\n")
    code, _, err = await cli("apps:create", "Bad_Name")
    assert code == 1 and err.startswith(" !    Invalid app name 'Bad_Name'") and err.count("\n") == 1


async def test_config_set_get_unset_and_the_heroku_layout(cli: Cli) -> None:
    code, out, _ = await cli("config:set", "DATABASE_URL=postgres://db/x", "LANG=en_US.UTF-8")
    assert code == 0
    assert out.splitlines() == ["Setting DATABASE_URL, LANG and restarting myapp... done, v1",
                                "DATABASE_URL: postgres://db/x", "LANG:         en_US.UTF-8"]
    assert (await cli("config"))[1] == (
        "=== myapp Config Vars\nDATABASE_URL: postgres://db/x\nLANG:         en_US.UTF-8\n")
    assert (await cli("config:get", "LANG"))[1] == "en_US.UTF-8\n"
    assert (await cli("config:unset", "LANG"))[1] == "Unsetting LANG and restarting myapp... done, v2\n"
    assert (await cli("config", "--shell"))[1] == "DATABASE_URL=postgres://db/x\n"


async def test_deploy_no_build_packs_uploads_and_releases(cli: Cli, api: tuple[FakePlatform, Path],
                                                         tmp_path: Path) -> None:
    platform, _ = api
    (tmp_path / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    (tmp_path / "app.py").write_text("print('hi')\n")
    code, out, err = await cli("deploy", "--no-build", str(tmp_path))
    assert (code, err) == (0, "")
    slug_id = next(iter(platform.slugs))
    assert "Releasing myapp... done, v1" in out
    assert out.endswith("http://myapp.localhost/ deployed as v1\n")
    release = platform.releases["myapp"][-1]
    assert release["description"] == f"Deploy {slug_id[:6]}"
    code, out, _ = await cli("releases")
    assert out.startswith("=== myapp Releases - Current: v1\nv1  Deploy ")


async def test_releases_create_and_rollback(cli: Cli, api: tuple[FakePlatform, Path], tmp_path: Path) -> None:
    import gzip

    slug = tmp_path / "slug.tgz"
    slug.write_bytes(gzip.compress(b"pretend tarball"))
    assert (await cli("releases:create", "--slug", str(slug)))[0] == 0
    await cli("config:set", "A=1")
    code, out, _ = await cli("releases:rollback", "v1")
    assert (code, out) == (0, "Rolling back myapp to v1... done, v3\n")
    code, out, _ = await cli("releases:info")
    assert "Change:        Rollback to v1" in out
    code, _, err = await cli("releases:create", "--slug", str(tmp_path / "missing.tgz"))
    assert code == 1 and "Cannot read the slug" in err


async def test_ps_scale_type_restart_stop(cli: Cli, api: tuple[FakePlatform, Path]) -> None:
    platform, _ = api
    platform.formations["myapp"] = {
        "web": {"type": "web", "quantity": 1, "size": "standard-1X", "command": "python app.py"},
        "worker": {"type": "worker", "quantity": 1, "size": "standard-1X", "command": "python w.py"}}
    code, out, _ = await cli("ps:scale", "web=3", "worker+1")
    assert out == "Scaling dynos... done, now running web at 3:standard-1X, worker at 2:standard-1X\n"
    code, out, _ = await cli("scale", "web=2:standard-2X")
    assert "web at 2:standard-2X" in out
    code, out, _ = await cli("ps:type", "worker=performance-M")
    assert "worker  performance-M  2" in out
    assert (await cli("ps:restart", "web"))[1] == "Restarting web dynos on myapp... done\n"
    assert (await cli("restart"))[1] == "Restarting dynos on myapp... done\n"
    assert platform.calls[-1] == ("restart_dynos", ("myapp", None))
    code, _, err = await cli("ps:stop", "web.9")
    assert code == 1 and "No dyno or process type web.9" in err
    code, out, _ = await cli("ps")
    assert out == "No dynos on myapp.\n"


async def test_ps_lists_dynos(cli: Cli, api: tuple[FakePlatform, Path]) -> None:
    platform, _ = api
    await cli("run:detached", "bash", "-c", "true")
    code, out, _ = await cli("ps")
    assert code == 0 and out.startswith("=== run: one-off processes (1)\nrun.4821 (standard-1X): starting ")
    assert out.rstrip().endswith(": bash -c true")


async def test_run_detached_says_where_the_output_goes(cli: Cli) -> None:
    code, out, _ = await cli("run:detached", "-s", "standard-2X", "--", "python", "job.py")
    assert out == ("Running python job.py on myapp... done, run.4821 (standard-2X)\n"
                   "Run dynoctl logs --app myapp --ps run.4821 to view the output.\n")


async def test_run_pipes_stdio_and_exits_with_the_command_code(cli: Cli, tmp_path: Path) -> None:
    stdin_r, stdin_w = os.pipe()
    os.write(stdin_w, b"piped input\n")
    os.close(stdin_w)
    out_fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    err_fd = os.open(tmp_path / "err", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert (await cli("run", "cat", fds=(stdin_r, out_fd, err_fd)))[0] == 0
        assert (await cli("run", "err", "bad", "news", fds=(stdin_r, out_fd, err_fd)))[0] == 0
        assert (await cli("run", "exit", "42", fds=(stdin_r, out_fd, err_fd)))[0] == 42
    finally:
        for fd in (stdin_r, out_fd, err_fd):
            os.close(fd)
    assert (tmp_path / "out").read_bytes() == b"piped input\n"
    assert (tmp_path / "err").read_bytes() == b"bad news\n"


async def test_run_with_a_terminal_asks_for_a_tty_of_its_size_and_restores_it(
        cli: Cli, api: tuple[FakePlatform, Path], tmp_path: Path) -> None:
    platform, _ = api
    controller, terminal = os.openpty()
    out_fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        termios.tcsetwinsize(terminal, (40, 100))
        before = termios.tcgetattr(terminal)
        code, _, err = await cli("run", "size", fds=(terminal, out_fd, out_fd))
        after = termios.tcgetattr(terminal)
    finally:
        for fd in (controller, terminal, out_fd):
            os.close(fd)
    assert (code, err) == (0, "")
    assert (tmp_path / "out").read_bytes() == b"40x100\n"
    assert platform.attached[-1].tty and before == after


async def test_logs_and_tail(cli: Cli, api: tuple[FakePlatform, Path]) -> None:
    platform, _ = api
    for n in range(5):
        platform.emit_log("myapp", f"2026-11-26T12:00:0{n}.000000+00:00 app[web.1]: line {n}")
    code, out, _ = await cli("logs", "-n", "2")
    assert out.splitlines() == ["2026-11-26T12:00:03.000000+00:00 app[web.1]: line 3",
                                "2026-11-26T12:00:04.000000+00:00 app[web.1]: line 4"]
    result: list[Any] = []

    async def tail() -> None:
        result.append(await cli("logs", "--tail", "-n", "1", "-p", "web.1"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tail)
        with trio.fail_after(5):
            while not platform._log_listeners.get("myapp"):
                await trio.sleep(0.01)
        platform.emit_log("myapp", "2026-11-26T12:00:09.000000+00:00 app[web.1]: live")
        platform.end_log_streams("myapp")
    code, out, _ = result[0]
    assert code == 0 and out.splitlines()[-1].endswith("app[web.1]: live")
    assert platform.calls[-1] == ("tail_logs", ("myapp", 1, "web.1", None))


async def test_drains_domains_certs_maintenance(cli: Cli, tmp_path: Path) -> None:
    assert (await cli("drains:add", "syslog://logs.example.com:514"))[1] == \
        "Successfully added drain syslog://logs.example.com:514\n"
    assert "syslog://logs.example.com:514 (d." in (await cli("drains"))[1]
    assert (await cli("drains:remove", "syslog://logs.example.com:514"))[0] == 0
    assert (await cli("drains"))[1] == "myapp has no drains.\n"
    code, _, err = await cli("drains:add", "ftp://x")
    assert code == 1 and "Unsupported drain URL" in err

    assert (await cli("domains:add", "www.example.com"))[1] == "Adding www.example.com to myapp... done\n"
    assert (await cli("domains"))[1] == ("=== myapp Heroku Domain\nmyapp.localhost\n\n"
                                         "=== myapp Custom Domains\nwww.example.com\n")
    assert (await cli("domains:remove", "www.example.com"))[0] == 0

    (tmp_path / "c.pem").write_text("-----BEGIN CERTIFICATE-----\n...\n")
    (tmp_path / "k.pem").write_text("-----BEGIN PRIVATE KEY-----\n...\n")
    code, out, _ = await cli("certs:add", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), "--domain", "x.io")
    assert code == 0 and "x.io, expires 2027-11-26T12:00:00Z (self-signed)" in out
    assert "x.io    2027-11-26T12:00:00Z  yes" in (await cli("certs"))[1]
    code, _, err = await cli("certs:add", str(tmp_path / "none.pem"), str(tmp_path / "k.pem"), "--domain", "x")
    assert code == 1 and "Cannot read the certificate" in err

    assert (await cli("maintenance"))[1] == "off\n"
    assert (await cli("maintenance:on"))[1] == "Enabling maintenance mode for myapp... done\n"
    assert (await cli("maintenance"))[1] == "on\n"


async def test_stacks_and_build_of_the_default(cli: Cli, api: tuple[FakePlatform, Path]) -> None:
    platform, _ = api
    code, out, _ = await cli("stacks")
    assert "debian-13 (default)  no" in out
    code, out, _ = await cli("stacks:build")
    assert (code, platform.calls[-1]) == (0, ("build_stack", ("debian-13",)))
    assert out.splitlines() == ["Building stack debian-13...", "       debootstrap: minbase",
                                "       installing python3", "       sealing",
                                "Built stack debian-13 (ab12cd), 166.9 MB"]


async def test_status_and_shutdown(cli: Cli, api: tuple[FakePlatform, Path]) -> None:
    platform, _ = api
    code, out, _ = await cli("status")
    assert code == 0 and out.startswith("=== dynod\n") and "Pid:     4242" in out
    assert await cli("system:shutdown", "--stop-dynos") == (0, "Shutting down dynod and every dyno... done\n", "")
    assert platform.shutdowns == [True]

