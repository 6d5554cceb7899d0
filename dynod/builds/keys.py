"""SSH keys allowed to `git push` to dynod: one authorized_keys file, every line a forced command.

sshd reads the file (``AuthorizedKeysFile`` for dynod's git user, e.g. /var/lib/dynod/ssh/
authorized_keys); each line pins its key to
``python -m dynod.builds.git serve --repos DIR -- KEYID`` with ``restrict`` (no forwarding of any
kind, no pty, no ~/.ssh/rc, and whatever future OpenSSH adds to that list), so a key can run
git-receive-pack on an app repository and nothing else. KEYID, the key's SHA256 fingerprint in
a shell-safe form, names the pusher in build records.

Keys are parsed with ``cryptography`` (a real key, not just three words), private keys are refused
with a warning, and the file is rewritten atomically (temp file, fsync, rename) under an
exclusive lock, so concurrent ``keys:add`` calls neither corrupt it nor lose a key, and sshd never
reads half a file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from ..errors import Conflict, NotFound, UserError

_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_MARK = "dynod.builds.git serve"


@dataclass(frozen=True, slots=True)
class SshKey:
    id: str  # the fingerprint's base64 with '+/' made URL-safe and no padding: shell- and path-safe
    type: str
    fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it
    comment: str  # usually an email; dynoctl keys:remove accepts it too
    blob: str  # the base64 key itself

    @property
    def public_key(self) -> str:
        return f"{self.type} {self.blob}" + (f" {self.comment}" if self.comment else "")

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "type": self.type, "fingerprint": self.fingerprint, "comment": self.comment}


def parse_public_key(text: str) -> SshKey:
    """One OpenSSH public key line (``type base64 [comment]``) -> SshKey, or a UserError."""
    line = text.strip()
    if "PRIVATE KEY" in line:
        raise UserError("That is a private key: never share it. Add the .pub file next to it instead.")
    words = line.split(None, 2)
    if len(line.splitlines()) != 1 or len(words) < 2 or words[0] not in _KEY_TYPES:
        raise UserError("Not an SSH public key: give one line like 'ssh-ed25519 AAAA... you@example.com' "
                        "(the contents of ~/.ssh/id_ed25519.pub).")
    key_type, blob = words[0], words[1]
    comment = words[2].strip() if len(words) > 2 else ""
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise UserError("Not an SSH public key: its base64 part is damaged; copy the .pub file again.") from None
    if not key_type.startswith("sk-"):  # cryptography cannot load security-key (FIDO) keys
        try:
            load_ssh_public_key(f"{key_type} {blob}".encode())
        except (ValueError, TypeError):
            raise UserError(f"Not a valid {key_type} public key; copy the .pub file again.") from None
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    key_id = digest.replace("+", "-").replace("/", "_")
    return SshKey(id=key_id, type=key_type, fingerprint=f"SHA256:{digest}", comment=comment, blob=blob)


def authorized_line(key: SshKey, serve_argv: Sequence[str]) -> str:
    """The authorized_keys line: restricted, and forced to dynod's git service for this key."""
    # "--": an id may begin with "-" (URL-safe base64), which must not read as an option.
    command = " ".join(shlex.quote(a) for a in [*serve_argv, "--", key.id])
    if '"' in command or "\\" in command:
        raise UserError("The git service command cannot contain quotes or backslashes; "
                        "install dynod under a plain path.")
    return f'restrict,command="{command}" {key.public_key}'


class AuthorizedKeys:
    """The keys sshd lets push, kept in ``path``; only lines dynod wrote are touched."""

    def __init__(self, path: Path, *, serve_argv: Sequence[str]) -> None:
        self.path = path
        self.serve_argv = list(serve_argv)

    def list(self) -> list[SshKey]:
        return [key for _line, key in self._entries(self._read())]

    def add(self, public_key: str) -> SshKey:
        key = parse_public_key(public_key)
        with self._locked():
            lines = self._read()
            for _line, existing in self._entries(lines):
                if existing.id == key.id:
                    raise Conflict(f"That key is already added ({existing.fingerprint}"
                                   f"{', ' + existing.comment if existing.comment else ''}).")
            self._write([*lines, authorized_line(key, self.serve_argv)])
        return key

    def remove(self, which: str) -> SshKey:
        """Remove by id, fingerprint or comment; a comment shared by several keys is ambiguous."""
        with self._locked():
            lines = self._read()
            matches = [(line, key) for line, key in self._entries(lines)
                       if which in (key.id, key.fingerprint, key.comment)]
            if not matches:
                raise NotFound(f"No key {which!r}; list them with dynoctl keys.")
            if len(matches) > 1:
                raise UserError(f"{len(matches)} keys are named {which!r}; remove one by its fingerprint.")
            line, key = matches[0]
            self._write([other for other in lines if other != line])
        return key

    # --- file handling ---

    def _entries(self, lines: list[str]) -> Iterator[tuple[str, SshKey]]:
        for line in lines:
            if _MARK not in line:
                continue  # a line an operator added by hand stays as it is
            match = re.search(r'" (\S+ \S+.*)$', line)
            if match is None:
                continue
            with contextlib.suppress(UserError):
                yield line, parse_public_key(match.group(1))

    def _read(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, lines: list[str]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".authorized_keys.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write("".join(line + "\n" for line in lines))
                f.flush()
                os.fsync(f.fileno())
            # sshd opens it as the git user; StrictModes refuses one others can write.
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
