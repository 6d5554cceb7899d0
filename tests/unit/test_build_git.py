from __future__ import annotations

import pytest

from dynod.builds.git import RefUpdate, deploy_update, parse_ref_updates, parse_ssh_command
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
