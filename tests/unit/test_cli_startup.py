"""dynoctl's start-up path: the launcher, and run's reading of its arguments without argparse,
shlex, json or urllib.parse. Each shortcut is checked against the stdlib module it stands in for."""

from __future__ import annotations

import io
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from dynod.api.client import _json_text, _path
from dynod.api.server import serve_api
from dynod.cli import launcher
from dynod.cli.command import Context
from dynod.cli.run import RunOptions, _parser, quick_options, shell_join, split_command
from dynod.errors import UserError
from tests.unit.fake_platform import FakePlatform

# What dynoctl run must not import: each costs milliseconds of start-up (re alone ~4 ms of CPU).
HEAVY = {"re", "json", "argparse", "shlex", "urllib.parse", "http.client", "typing", "dataclasses", "inspect",
         "pathlib", "importlib.util", "gettext", "ssl", "trio", "h11", "email", "enum", "socket", "selectors", "signal"}

ARGVS = [
    [], ["-a", "myapp"], ["--app", "myapp"], ["--app=myapp"], ["-a", "x", "-a", "y"], ["-s", "standard-2X"],
    ["--size=performance-l", "-a", "x"], ["-e", "A=1", "-e", "B=2;C=3"], ["--env=A=1", "--env", "B="],
    ["--no-tty"], ["--no-tty", "--no-tty", "-a", "x"], ["--socket", "/tmp/s.sock"], ["--socket=/x"],
    ["--host", "https://h:5000"], ["--host=https://h", "-a", "x"],
    # argparse's to read: help, joined or abbreviated options, odd values, mistakes
    ["-h"], ["--help"], ["-amyapp"], ["-a=x"], ["--ap", "x"], ["--no-tty=1"], ["-a"], ["--app"], ["-a", ""],
    ["--app="], ["-a", "-s"], ["-s", "-1"], ["-x"], ["--bogus", "1"], ["-a", "x", "extra"], ["-e"],
]


def argparse_reading(command: str, argv: list[str]) -> RunOptions | str:
    """What argparse makes of ``argv``: the options, or its error line (or "help")."""
    ctx = Context(stdout=io.StringIO(), environ={})
    try:
        args = ctx.parse(_parser(ctx, command, ""), argv)
    except UserError as exc:
        return f"error: {exc}"
    except Exception as exc:  # noqa: BLE001 - HelpShown
        return type(exc).__name__
    return RunOptions(args.app, args.size, args.env, getattr(args, "no_tty", False), args.socket, args.host)


@pytest.mark.parametrize("command", ["run", "run:detached"])
@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_quick_options_read_exactly_what_argparse_reads_or_leave_it_to_argparse(command: str, argv: list[str],
                                                                                ) -> None:
    quick = quick_options(command, argv)
    if quick is not None:
        assert quick == argparse_reading(command, argv)


def test_the_usual_run_options_never_need_argparse() -> None:
    for argv in ARGVS[:15]:
        assert quick_options("run", argv) is not None, argv
    assert quick_options("run:detached", ["--no-tty"]) is None  # run:detached has no --no-tty


def test_split_command_gives_the_same_options_either_way() -> None:
    ctx = Context(stdout=io.StringIO(), environ={})
    quick, command = split_command(ctx, "run", ["--app=myapp", "-e", "A=1", "--no-tty", "ls", "-la"], "")
    assert quick == RunOptions("myapp", None, ["A=1"], True) and command == "ls -la"
    slow, command = split_command(ctx, "run", ["-amyapp", "-e", "A=1", "--no-tty", "ls", "-la"], "")
    assert slow == quick and command == "ls -la"
    # --host takes a value: the command starts after it, not at it
    options, command = split_command(ctx, "run", ["--host", "https://h:5000", "bash"], "")
    assert options.host == "https://h:5000" and command == "bash"
    with pytest.raises(UserError, match="^Argument -a/--app: expected one argument: see `dynoctl run --help`.$"):
        split_command(ctx, "run", ["-a", "--", "true"], "")


def test_help_is_still_argparse_s(tmp_path: Path) -> None:
    from dynod.cli import main

    out = io.StringIO()
    assert main(["run", "--help"], stdout=out, stderr=io.StringIO(), environ={}) == 0
    assert "usage: dynoctl run" in out.getvalue() and "--no-tty" in out.getvalue()


WORDS = ["", "plain", "a b", "it's", "$HOME", "*.py", "-la", "x=1", "a,b:c/d.e%f@g+h", "tab\there", "new\nline",
         "é", "日本", "\\", '"quoted"', "~user", "semi;colon", "a'b\"c", "`id`", "!", "#"]


def test_shell_join_is_shlex_join() -> None:
    rng = random.Random(16)
    for word in WORDS:
        assert shell_join([word]) == shlex.join([word])
    for _ in range(200):
        words = rng.sample(WORDS, rng.randint(1, 5))
        assert shell_join(words) == shlex.join(words)


STRINGS = ["", "true", "echo hi", 'say "hi"', "back\\slash", "tab\tnew\nline\rcr\bbs\fff", "\x00\x01\x1f\x7f",
           "é ü", "日本語", "emoji 🙂", "\udcff lone surrogate (a non-UTF-8 argv byte)", "\U0010ffff", "</script>"]


def test_attach_bodies_are_what_json_dumps_writes() -> None:
    for text in STRINGS:
        assert _json_text(text) == json.dumps(text)
    body = {"command": "sh -c 'echo \"$A\"'", "size": None, "env": {"A": "1", "UNI": "日本", "E": ""},
            "attach": True, "tty": False, "rows": 24, "cols": 80, "term": "xterm-256color"}
    assert _json_text(body) == json.dumps(body)
    assert json.loads(_json_text(body)) == body
    for other in ([1, 2], 1.5, {1: "x"}, {"nested": [True]}):  # not the attach fields: json writes them
        assert _json_text(other) == json.dumps(other)


def test_path_segments_are_quoted_as_urllib_quotes_them() -> None:
    for segment in ["myapp", "run.12", "a_b-c~d", "", "a b", "a/b", "ä", "%41", "?x=1#y"]:
        assert _path("apps", segment) == "/apps/" + quote(segment, safe="")


# --- the launcher -------------------------------------------------------------------------------


def test_the_launcher_runs_dynoctl_without_site_and_with_dynod_on_its_path(tmp_path: Path) -> None:
    script = tmp_path / "dynoctl"
    assert launcher.main([str(script)]) == 0
    first_line = script.read_text().splitlines()[0]
    assert first_line == f"#!{sys.executable} -SP"
    assert os.access(script, os.X_OK)
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30,
                             env={"PATH": os.environ["PATH"], "PYTHONPATH": "/nonexistent"})
    assert (version.returncode, version.stdout, version.stderr) == (0, "dynoctl 0.1.0\n", "")
    # bad input: one line, exit 1, as from the console script
    bad = subprocess.run([str(script), "nope"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and bad.stderr.startswith(" !    Unknown command 'nope'") and bad.stderr.count("\n") == 1
    assert launcher.main([]) == 2 and launcher.main([str(tmp_path / "no" / "dir" / "dynoctl")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynoctl"]  # no temporary left behind


def test_the_launcher_refuses_an_interpreter_path_a_shebang_cannot_hold() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        launcher.script("/opt/my python/bin/python3", ["/x"])


def test_run_imports_nothing_heavy() -> None:
    """The modules `dynoctl run` loads (a failing connect, so no server is needed), under -S -P as
    the launcher starts it."""
    code = (f"import sys; sys.path += {launcher.search_paths()!r}\n"
            "from dynod.cli import main\n"
            "code = main(['run', '-a', 'x', '--no-tty', '--socket', '/nonexistent/api.sock', '--', 'sh', '-c',"
            " 'echo \"$A\"'], stderr=open('/dev/null', 'w'))\n"
            f"print(code, sorted(set(sys.modules) & {HEAVY!r}))")
    result = subprocess.run([sys.executable, "-S", "-P", "-c", code], capture_output=True, text=True, timeout=30,
                            env={"PATH": os.environ["PATH"]})
    assert result.stdout == "1 []\n", result.stderr


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


async def test_run_through_the_launcher_pipes_stdio_sends_options_and_exits_with_the_code(
        api: tuple[FakePlatform, Path], tmp_path: Path) -> None:
    platform, socket_path = api
    script = tmp_path / "dynoctl"
    launcher.write(str(script))
    env = {"PATH": os.environ["PATH"], "DYNOD_SOCKET": str(socket_path)}
    cat = await trio.run_process([str(script), "run", "-a", "myapp", "--", "cat"], stdin=b"piped\n",
                                 capture_stdout=True, capture_stderr=True, env=env)
    assert (cat.returncode, cat.stdout, cat.stderr) == (0, b"piped\n", b"")
    code = await trio.run_process([str(script), "run", "--app=myapp", "-s", "standard-2X", "-e", "A=日本;B=\"q\"",
                                   "--", "exit", "42"], stdin=b"", check=False, env=env)
    assert code.returncode == 42
    name, (app, command, size, extra, tty, _, _) = platform.calls[-1]
    assert (name, app, command, size, extra, tty) == (
        "run_attached", "myapp", "exit 42", "standard-2X", {"A": "日本", "B": '"q"'}, False)
