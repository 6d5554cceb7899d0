from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

import dynod
from dynod.builds.git import (
    RefUpdate,
    _hook_arguments,
    _serve_arguments,
    create_repo,
    deploy_update,
    main,
    parse_ref_updates,
    parse_ssh_command,
)
from dynod.errors import UserError

OLD, NEW, ZERO = "1" * 40, "2" * 40, "0" * 40


def test_main_and_master_deploy():
    for ref in ("refs/heads/main", "refs/heads/master"):
        assert deploy_update(parse_ref_updates([f"{OLD} {NEW} {ref}\n"])) == RefUpdate(OLD, NEW, ref)


@pytest.mark.parametrize("lines, message", [
    ([f"{OLD} {NEW} refs/heads/feature"], "Pushed to feature: dynod deploys only main or master"),
    ([f"{OLD} {NEW} refs/tags/v1"], "deploys only main or master"),
    ([f"{OLD} {ZERO} refs/heads/main"], "Deleting main is not allowed"),
    ([f"{OLD} {NEW} refs/heads/main", f"{OLD} {NEW} refs/heads/master"], "not both"),
])
def test_refused_pushes(lines: list[str], message: str):
    with pytest.raises(UserError, match=message):
        deploy_update(parse_ref_updates(lines))


@pytest.mark.parametrize("command, app", [
    ("git-receive-pack 'myapp.git'", "myapp"), ("git-receive-pack '/myapp.git'", "myapp"),
    ("git receive-pack 'myapp.git'", "myapp"), ("git-receive-pack 'myapp'", "myapp"),
])
def test_ssh_command_names_an_app(command: str, app: str):
    assert parse_ssh_command(command) == ("git-receive-pack", app)


@pytest.mark.parametrize("command, message", [
    (None, "opens no shell"), ("bash", "Only `git push` is served"),
    ("git-upload-pack 'myapp.git'", "accepts pushes only"),
    ("git-receive-pack '../../etc.git'", "not an app repository"),
    ("git-receive-pack 'Bad_Name.git'", "Invalid app name"),
    ("git-receive-pack 'myapp.git'; rm -rf /", "Only `git push` is served"),
])
def test_ssh_command_refusals(command: str | None, message: str):
    with pytest.raises(UserError, match=message):
        parse_ssh_command(command)


def _hook_line(tmp_path: Path) -> list[str]:
    create_repo(tmp_path, "hookapp", api_socket=tmp_path / "api.sock")
    last = (tmp_path / "hookapp.git" / "hooks" / "pre-receive").read_text().splitlines()[-1]
    words = shlex.split(last)
    assert words[0] == "exec"
    return words[1:]


def test_the_hook_starts_without_site_or_the_pushers_python_path(tmp_path: Path):
    # A PYTHONPATH in the pusher's environment must not choose the code the hook runs, and the
    # hook names the dynod that wrote it; its start loads neither site nor what only reads answers.
    argv = _hook_line(tmp_path)
    assert argv[1:3] == ["-I", "-S"] and argv[3] == "-c"
    decoy = tmp_path / "decoy" / "dynod"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise SystemExit('the decoy dynod was imported')\n")
    code = argv[4].replace("sys.exit(main())", "print(sorted(set(sys.modules) & {'site', 'argparse', 'json', "
                           "'dataclasses', 'tempfile', 'dynod.builds.events', 'dynod.model'}), "
                           "sys.modules['dynod'].__file__)")
    env = {**os.environ, "PYTHONPATH": str(decoy.parent)}
    done = subprocess.run([argv[0], "-I", "-S", "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", str(Path(dynod.__file__).resolve())]


def test_the_hook_line_is_read_without_argparse_and_anything_else_with_it(tmp_path: Path):
    argv = _hook_line(tmp_path)
    assert _hook_arguments(argv[5:]) == ("hookapp", str(tmp_path / "api.sock"))
    assert _hook_arguments(["pre-receive", "--api-socket", "s", "--app", "a"]) is None  # argparse reads it
    with pytest.raises(SystemExit):
        main(["pre-receive", "--app", "a"])  # argparse's one line: --api-socket is required


@pytest.mark.parametrize("key_id", ["-Lh2xTz8Y0Pq", "--x", "abc_-"])
def test_a_forced_command_reads_a_key_id_that_begins_with_a_dash(key_id: str):
    """URL-safe base64 fingerprints begin with "-" one time in 64: argparse took that for an option
    and refused the SSH push ("the following arguments are required: key_id"), seen in a full run."""
    from dynod.builds.keys import SshKey, authorized_line

    key = SshKey(id=key_id, type="ssh-ed25519", fingerprint="SHA256:x", comment="", blob="AAAA")
    line = authorized_line(key, ["/usr/bin/python3", "-m", "dynod.builds.git", "serve", "--repos", "/r"])
    argv = shlex.split(line.split('command="', 1)[1].split('"', 1)[0])[3:]
    assert _serve_arguments(argv) == ("/r", key_id)
    assert _serve_arguments(["serve", "--repos", "/r", key_id]) == ("/r", key_id)  # a line written before "--"
    assert _serve_arguments(["serve", "--repos"]) is None  # argparse's one line for anything else
