"""The account store: users, API tokens (only their hashes), app access, who made each release.

One SQLite file, mode 0600 from its first byte (it is opened through an fd made 0600, never
chmod'ed after the fact). A token is ``dynod_`` + 32 random bytes (urlsafe base64): a secret that
high in entropy needs no slow hash, so the store keeps ``sha256(token)`` and looks it up by that
digest; the stored digest is then compared with ``hmac.compare_digest`` so the answer never depends
on how many bytes matched.

Apps are named here by ``app_key``: a UUID derived from the ledger's app id, name and creation
time. An app destroyed and made again under the same name gets a new key, so the old one's owner
and collaborators are never inherited by the new one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Conflict, NotFound, UserError

TOKEN_PREFIX = "dynod_"
# dynod's own namespace for the ids it derives (apps, releases, dynos): stable across restarts.
NAMESPACE = uuid.UUID("5b0c7d1e-8f0a-4c8e-9a51-6f1d2d0c9e43")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}")
MAX_DESCRIPTION = 200
ROLES = ("owner", "collaborator")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), digest BLOB NOT NULL UNIQUE,
    description TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS access (
    app_key TEXT NOT NULL, app TEXT NOT NULL, user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (app_key, user_id));
CREATE TABLE IF NOT EXISTS ssh_keys (
    key_id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS release_users (
    app_key TEXT NOT NULL, version INTEGER NOT NULL, user_id TEXT NOT NULL,
    PRIMARY KEY (app_key, version));
"""


def app_key(app: Mapping[str, Any]) -> str:
    """The app's stable id from its ledger row, as the API's ``{"id", "name", "created_at"}`` gives it."""
    return str(uuid.uuid5(NAMESPACE, f"app\0{app['id']}\0{app['name']}\0{app['created_at']}"))


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def unauthorized(message: str) -> UserError:
    return UserError(message, status=401, code="unauthorized")


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    admin: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    user_id: str
    description: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None


class AccountStore:
    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)  # a file from an older umask: tighten it before it holds anything new
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- users -------------------------------------------------------------------------------------

    def add_user(self, email: str, *, admin: bool = False) -> User:
        if not isinstance(email, str) or not _EMAIL.fullmatch(email):
            raise UserError(f"{str(email)[:80]!r} is not an email address: give one like jane@example.com.")
        user = User(str(uuid.uuid4()), email.lower(), admin, time.time())
        try:
            self._db.execute("INSERT INTO users VALUES (?, ?, ?, ?)",
                             (user.id, user.email, int(admin), user.created_at))
        except sqlite3.IntegrityError:
            raise Conflict(f"A user {user.email} already exists.") from None
        return user

    def get_user(self, id_or_email: str) -> User:
        row = self._db.execute("SELECT id, email, admin, created_at FROM users WHERE id = ? OR email = ?",
                               (id_or_email, id_or_email.lower())).fetchone()
        if row is None:
            raise NotFound(f"No such user {id_or_email[:80]!r}: add one with dynoctl users:add EMAIL.")
        return User(row[0], row[1], bool(row[2]), row[3])

    def list_users(self) -> list[User]:
        rows = self._db.execute("SELECT id, email, admin, created_at FROM users ORDER BY email").fetchall()
        return [User(r[0], r[1], bool(r[2]), r[3]) for r in rows]

    # -- tokens ------------------------------------------------------------------------------------

    def create_token(self, user_id: str, description: str = "", *, expires_in: float | None = None
                     ) -> tuple[Token, str]:
        """A new token for the user: the record, and the secret (shown once, never stored)."""
        self.get_user(user_id)
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION or "\x00" in description:
            raise UserError(f"A token's description is a string of at most {MAX_DESCRIPTION} characters.")
        if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, int | float)
                                       or not 1 <= expires_in <= 10 * 365 * 86400):
            raise UserError("expires_in must be a number of seconds from 1 to ten years.")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        token = Token(str(uuid.uuid4()), user_id, description, now,
                      None if expires_in is None else now + expires_in, None)
        self._db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, NULL)",
                         (token.id, user_id, digest(secret), description, now, token.expires_at))
        return token, secret

    def authenticate(self, secret: str) -> tuple[User, Token]:
        """The user a token belongs to; a 401 UserError saying why not (wrong, expired, revoked)."""
        wanted = digest(secret)
        row = self._db.execute(
            "SELECT t.id, t.user_id, t.description, t.created_at, t.expires_at, t.revoked_at, t.digest, "
            "u.email, u.admin, u.created_at FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.digest = ?",
            (wanted,)).fetchone()
        if row is None or not hmac.compare_digest(bytes(row[6]), wanted):
            raise unauthorized("Invalid credentials provided: log in again (dynoctl login) or make a new token.")
        token = Token(row[0], row[1], row[2], row[3], row[4], row[5])
        if token.revoked_at is not None:
            raise unauthorized("This token was revoked: log in again (dynoctl login) or make a new token.")
        if token.expires_at is not None and token.expires_at <= time.time():
            raise unauthorized("This token has expired: log in again (dynoctl login) or make a new token.")
        return User(row[1], row[7], bool(row[8]), row[9]), token

    def list_tokens(self, user_id: str | None) -> list[Token]:
        """A user's live tokens (None: everyone's)."""
        query = "SELECT id, user_id, description, created_at, expires_at, revoked_at FROM tokens " \
                "WHERE revoked_at IS NULL"
        args: tuple[str, ...] = ()
        if user_id is not None:
            query += " AND user_id = ?"
            args = (user_id,)
        return [Token(*row) for row in self._db.execute(query + " ORDER BY created_at", args).fetchall()]

    def revoke_token(self, token_id: str, *, user_id: str | None) -> Token:
        """Revoke one token; a user may revoke only their own (None: the administrator)."""
        row = self._db.execute("SELECT id, user_id, description, created_at, expires_at, revoked_at FROM tokens "
                               "WHERE id = ? AND revoked_at IS NULL", (token_id,)).fetchone()
        if row is None or (user_id is not None and row[1] != user_id):
            raise NotFound(f"No such authorization {token_id[:80]!r}: dynoctl authorizations lists yours.")
        now = time.time()
        self._db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (now, token_id))
        return Token(row[0], row[1], row[2], row[3], row[4], now)

    # -- app access --------------------------------------------------------------------------------

    def grant(self, key: str, app: str, user_id: str, role: str) -> None:
        if role not in ROLES:
            raise UserError(f"Unknown role {role!r}: use owner or collaborator.")
        if role == "owner":
            self._db.execute("DELETE FROM access WHERE app_key = ? AND role = 'owner'", (key,))
        elif self.role_of(key, user_id) is not None:
            raise Conflict(f"{self._email(user_id)} already has access to {app}.")
        self._db.execute("INSERT OR REPLACE INTO access VALUES (?, ?, ?, ?, ?)",
                         (key, app, user_id, role, time.time()))

    def revoke_access(self, key: str, app: str, user_id: str) -> None:
        role = self.role_of(key, user_id)
        if role is None:
            raise NotFound(f"{self._email(user_id)} is not a collaborator on {app}.")
        if role == "owner":
            raise UserError(f"{self._email(user_id)} owns {app}; the owner cannot be removed.")
        self._db.execute("DELETE FROM access WHERE app_key = ? AND user_id = ?", (key, user_id))

    def role_of(self, key: str, user_id: str) -> str | None:
        row = self._db.execute("SELECT role FROM access WHERE app_key = ? AND user_id = ?",
                               (key, user_id)).fetchone()
        return None if row is None else row[0]

    def access_of(self, key: str) -> list[tuple[User, str, float]]:
        rows = self._db.execute(
            "SELECT u.id, u.email, u.admin, u.created_at, a.role, a.created_at FROM access a "
            "JOIN users u ON u.id = a.user_id WHERE a.app_key = ? ORDER BY a.role DESC, u.email", (key,)).fetchall()
        return [(User(r[0], r[1], bool(r[2]), r[3]), r[4], r[5]) for r in rows]

    def keys_of(self, user_id: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT app_key FROM access WHERE user_id = ?", (user_id,))}

    def forget_app(self, key: str) -> None:
        self._db.execute("DELETE FROM access WHERE app_key = ?", (key,))
        self._db.execute("DELETE FROM release_users WHERE app_key = ?", (key,))

    # -- SSH keys: whose each is (a key with no owner is the administrator's) ------------------------

    def own_key(self, key_id: str, user_id: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO ssh_keys VALUES (?, ?, ?)", (key_id, user_id, time.time()))

    def key_owner(self, key_id: str) -> User | None:
        row = self._db.execute("SELECT user_id FROM ssh_keys WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else self.get_user(row[0])

    def keys_owned(self, user_id: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT key_id FROM ssh_keys WHERE user_id = ?", (user_id,))}

    def disown_key(self, key_id: str) -> None:
        self._db.execute("DELETE FROM ssh_keys WHERE key_id = ?", (key_id,))

    # -- who made each release ---------------------------------------------------------------------

    def record_release(self, key: str, version: int, user_id: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO release_users VALUES (?, ?, ?)", (key, version, user_id))

    def release_users(self, key: str) -> dict[int, User]:
        rows = self._db.execute(
            "SELECT r.version, u.id, u.email, u.admin, u.created_at FROM release_users r "
            "JOIN users u ON u.id = r.user_id WHERE r.app_key = ?", (key,)).fetchall()
        return {r[0]: User(r[1], r[2], bool(r[3]), r[4]) for r in rows}

    def _email(self, user_id: str) -> str:
        try:
            return self.get_user(user_id).email
        except NotFound:
            return user_id
