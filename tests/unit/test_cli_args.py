"""dynoctl's argument parsing: bad input is one line and no request at all."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dynod.cli import main, resolve
from dynod.cli.command import Context
from dynod.cli.config import parse_assignments
from dynod.cli.ps import parse_scale, parse_type_sizes, resolve_scale
from dynod.cli.releases import parse_version
from dynod.cli.run import parse_env, split_command
from dynod.errors import UserError


def test_scale_forms() -> None:
    assert parse_scale(["web=3", "worker=2:standard-2X", "clock+1", "my-worker-1", "big=performance-m"]) == [
        ("web", "=", 3, None), ("worker", "=", 2, "standard-2X"), ("clock", "+", 1, None),
        ("my-worker", "-", 1, None), ("big", "=", None, "performance-M")]


@pytest.mark.parametrize("word", ["web=-1", "web=1.5", "web=abc", "web", "web=", "web=2:", "web=2:huge",
                                  "we b=1", "=3", "web+x"])
def test_bad_scale_words_are_user_errors(word: str) -> None:
    with pytest.raises(UserError):
        parse_scale([word])


def test_scale_twice_and_nothing_are_errors() -> None:
    with pytest.raises(UserError, match="twice"):
        parse_scale(["web=1", "web+1"])
    with pytest.raises(UserError, match="Nothing to scale"):
        parse_scale([])


def test_relative_scale_resolves_against_the_formation() -> None:
    formation = [{"type": "web", "quantity": 2}, {"type": "worker", "quantity": 1}]
    changes = parse_scale(["web+2", "worker-1", "clock=0"])
    assert resolve_scale(changes, formation) == [
        {"type": "web", "quantity": 4}, {"type": "worker", "quantity": 0}, {"type": "clock", "quantity": 0}]
    with pytest.raises(UserError, match="Cannot scale worker to -1"):
        resolve_scale(parse_scale(["worker-2"]), formation)
    with pytest.raises(UserError, match="No clock process type"):
        resolve_scale(parse_scale(["clock+1"]), formation)


def test_config_assignments() -> None:
    assert parse_assignments(["A=1", "B=", "URL=postgres://u:p@h/db?x=y"]) == {
        "A": "1", "B": "", "URL": "postgres://u:p@h/db?x=y"}
    for bad in (["A"], ["1A=x"], ["PORT=80"], []):
        with pytest.raises(UserError):
            parse_assignments(bad)


def test_type_sizes_and_versions_and_env() -> None:
    assert parse_type_sizes(["web=standard-2X"]) == [{"type": "web", "size": "standard-2X"}]
    with pytest.raises(UserError):
        parse_type_sizes(["web"])
    assert parse_version("v12") == parse_version("12") == 12
    with pytest.raises(UserError):
        parse_version("v0")
    assert parse_env(["A=1;B=two=2", "C="]) == {"A": "1", "B": "two=2", "C": ""}
    with pytest.raises(UserError):
        parse_env(["novalue"])


def test_run_splits_options_from_the_command() -> None:
    ctx = Context(stdout=io.StringIO(), environ={})
    args, command = split_command(ctx, "run", ["-a", "myapp", "-e", "A=1", "ls", "-la"], "")
    assert (args.app, args.env, command) == ("myapp", ["A=1"], "ls -la")
    args, command = split_command(ctx, "run", ["--no-tty", "--", "-weird", "-a", "x"], "")
    assert args.no_tty and args.app is None and command == "-weird -a x"
    with pytest.raises(UserError, match="Usage"):
        split_command(ctx, "run", ["-a", "myapp"], "")


def test_unknown_commands_suggest_the_closest() -> None:
    assert resolve("scale") == ("ps", "scale")
    with pytest.raises(UserError, match="did you mean `dynoctl config:set`"):
        resolve("config:sett")


def run_cli(argv: list[str], tmp_path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    # A socket path with nothing behind it: any request would fail with "dynod is not running".
    code = main(argv, stdout=out, stderr=err, environ={"DYNOD_SOCKET": str(tmp_path / "none.sock")})
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", [
    ["ps:scale", "-a", "myapp", "web=-1"], ["scale", "-a", "myapp", "web=x"], ["config:set", "-a", "myapp", "A"],
    ["logs", "-a", "myapp", "-n", "0"], ["logs", "-a", "myapp", "-s", "kernel"], ["nope"], ["ps", "--bogus"],
    ["releases:info", "-a", "myapp", "vX"], ["run", "-a", "myapp", "-e", "junk", "bash"], ["ps"],
])
def test_bad_input_is_one_line_exit_1_and_no_request(argv: list[str], tmp_path: Path) -> None:
    code, out, err = run_cli(argv, tmp_path)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(" !    ")
    assert "dynod is not running" not in err  # refused before any request was attempted
    assert "Traceback" not in err


def test_missing_app_says_how_to_name_it(tmp_path: Path) -> None:
    assert run_cli(["ps"], tmp_path)[2] == " !    No app specified: use -a APP or set $DYNOD_APP.\n"


def test_no_server_is_one_line(tmp_path: Path) -> None:
    code, _, err = run_cli(["apps"], tmp_path)
    assert code == 1 and "dynod is not running" in err and err.count("\n") == 1


def test_help_lists_commands_and_command_help_exits_0(tmp_path: Path) -> None:
    code, out, _ = run_cli([], tmp_path)
    assert code == 0 and "ps:scale" in out and "releases:rollback" in out
    code, out, _ = run_cli(["ps:scale", "--help"], tmp_path)
    assert code == 0 and "usage: dynoctl ps:scale" in out
    code, out, _ = run_cli(["help", "logs"], tmp_path)
    assert code == 0 and "--tail" in out


def test_run_takes_a_trailing_app_option_as_heroku_does() -> None:
    ctx = Context(stdout=io.StringIO(), environ={})
    args, command = split_command(ctx, "run", ["bash", "-a", "myapp"], "run")
    assert (args.app, command) == ("myapp", "bash")
    args, command = split_command(ctx, "run", ["-a", "x", "--", "grep", "-a", "y"], "run")
    assert (args.app, command) == ("x", "grep -a y")
    args, command = split_command(ctx, "run", ["-a", "x", "--", "sh", "-c", "echo hi; id"], "run")
    assert command == "sh -c 'echo hi; id'"  # several words keep their boundaries
