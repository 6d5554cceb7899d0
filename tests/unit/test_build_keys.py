from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dynod.builds.keys import AuthorizedKeys, parse_public_key
from dynod.errors import Conflict, NotFound, UserError

SERVE = ["/opt/dynod/.venv/bin/python", "-m", "dynod.builds.git", "serve", "--repos", "/var/lib/dynod/repos"]


def keygen(tmp_path: Path, name: str, comment: str) -> tuple[str, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(tmp_path / name)],
                   check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / f"{name}.pub")], check=True,
                                 capture_output=True, text=True).stdout.split()[1]
    return (tmp_path / f"{name}.pub").read_text(), fingerprint


def test_fingerprint_matches_ssh_keygen(tmp_path: Path):
    text, fingerprint = keygen(tmp_path, "k", "dev@example.com")
    key = parse_public_key(text)
    assert key.fingerprint == fingerprint and key.comment == "dev@example.com"
    assert all(c.isalnum() or c in "-_" for c in key.id)


@pytest.mark.parametrize("text, message", [
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "That is a private key"),
    ("hello world", "Not an SSH public key"),
    ("ssh-ed25519 not*base64", "base64 part is damaged"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==", "Not a valid ssh-ed25519 public key"),
])
def test_bad_keys(text: str, message: str):
    with pytest.raises(UserError, match=message):
        parse_public_key(text)


def test_add_list_remove_with_forced_command(tmp_path: Path):
    keys = AuthorizedKeys(tmp_path / "ssh" / "authorized_keys", serve_argv=SERVE)
    one, _ = keygen(tmp_path, "one", "one@example.com")
    two, fp_two = keygen(tmp_path, "two", "two@example.com")
    k1 = keys.add(one)
    keys.add(two)
    (tmp_path / "ssh" / "authorized_keys").write_text(
        (tmp_path / "ssh" / "authorized_keys").read_text() + "ssh-ed25519 AAAA operator-added\n")
    line = (tmp_path / "ssh" / "authorized_keys").read_text().splitlines()[0]
    assert line.startswith(f'restrict,command="{" ".join(SERVE)} -- {k1.id}" ssh-ed25519 ')
    assert [k.comment for k in keys.list()] == ["one@example.com", "two@example.com"]
    with pytest.raises(Conflict, match="already added"):
        keys.add(one)
    assert keys.remove(fp_two).comment == "two@example.com"
    assert keys.remove("one@example.com").id == k1.id
    assert keys.list() == []
    assert (tmp_path / "ssh" / "authorized_keys").read_text() == "ssh-ed25519 AAAA operator-added\n"
    with pytest.raises(NotFound):
        keys.remove("nobody")
