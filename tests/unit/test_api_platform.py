"""The Platform API layer's pure parts: Range pagination, tokens and their store, credentials,
the Accept version, quantities, the rate limit. No root, no dynod."""

from __future__ import annotations

import base64
import os
import stat
import time
from pathlib import Path

import pytest

from dynod.accounts import AccountStore, app_key
from dynod.accounts.store import digest
from dynod.api.platform_api import RateLimiter, check_accept, credentials, parse_quantity, release_version
from dynod.api.ranges import paginate, parse_range
from dynod.errors import NotFound, UserError

ITEMS = [{"version": v, "id": f"id-{v:02d}"} for v in range(1, 8)]


def test_range_pages_forward_with_next_range() -> None:
    page, following = paginate(ITEMS, parse_range("version ..; max=3", ["version", "id"]))
    assert [i["version"] for i in page] == [1, 2, 3] and following == "version ]3..; max=3, order=asc"
    page, following = paginate(ITEMS, parse_range(following, ["version", "id"]))
    assert [i["version"] for i in page] == [4, 5, 6]
    page, following = paginate(ITEMS, parse_range(following, ["version", "id"]))
    assert [i["version"] for i in page] == [7] and following is None


def test_range_descending_numbers_and_heroku3_spelling() -> None:
    # heroku3 writes "version ..; order=desc,max=10;"; numbers sort as numbers (10 after 9).
    items = [{"version": v} for v in (9, 10, 1)]
    page, _ = paginate(items, parse_range("version ..; order=desc,max=10;", ["version"]))
    assert [i["version"] for i in page] == [10, 9, 1]
    page, _ = paginate(ITEMS, parse_range("version 3..5", ["version"]))
    assert [i["version"] for i in page] == [3, 4, 5]


def test_no_range_is_the_first_200() -> None:
    items = [{"id": f"{i:04d}"} for i in range(250)]
    page, following = paginate(items, parse_range(None, ["id"]))
    assert len(page) == 200 and following == "id ]0199..; max=200, order=asc"


@pytest.mark.parametrize("header", [
    "colour ..", "version", "version ..; max=0", "version ..; max=1001", "version ..; order=sideways",
    "version ..; max=abc", "version ..; limit=3", "x" * 600, "version ..;max=3;max=٣",
])
def test_malformed_ranges_are_416(header: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_range(header, ["version", "id"])
    assert caught.value.status == 416 and caught.value.code == "requested_range_not_satisfiable"


def test_credentials_bearer_and_basic_with_the_token_as_password() -> None:
    assert credentials({"authorization": "Bearer abc"}) == "abc"
    basic = base64.b64encode(b":tok123").decode()
    assert credentials({"authorization": f"Basic {basic}"}) == "tok123"
    assert credentials({"authorization": "Basic " + base64.b64encode(b"me@x.test:tok").decode()}) == "tok"
    for bad in ("", "Bearer", "Basic !!!", "Basic " + base64.b64encode(b"nopassword").decode(), "Token x"):
        assert credentials({"authorization": bad}) is None


def test_accept_version_three_and_its_variants_only() -> None:
    for ok in ("", "*/*", "application/json", "application/vnd.heroku+json; version=3",
               "application/vnd.heroku+json; version=3.cedar-acm", "application/vnd.heroku+json"):
        check_accept({"accept": ok})
    for bad in ("application/vnd.heroku+json; version=2", "application/vnd.heroku+json; version=4"):
        with pytest.raises(UserError) as caught:
            check_accept({"accept": bad})
        assert caught.value.status == 406 and caught.value.code == "not_acceptable"


def test_quantities_as_numbers_or_numeric_strings() -> None:
    assert parse_quantity(2, "web") == 2 and parse_quantity("3", "web") == 3 and parse_quantity(" 0 ", "web") == 0
    for bad in (True, "two", "-1", 1.5, None, "٣", "1000"):
        with pytest.raises(UserError):
            parse_quantity(bad, "web")
    assert release_version("v3") == 3 and release_version(4) == 4 and release_version("12") == 12
    for bad in ("v0", 0, True, "three", "v-1"):
        with pytest.raises(UserError):
            release_version(bad)


def test_rate_limit_spends_and_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.take("u"), limiter.take("u"), limiter.take("u")] == [2, 1, 0]
    with pytest.raises(UserError) as caught:
        limiter.take("u")
    assert caught.value.status == 429 and caught.value.code == "rate_limit"
    assert limiter.take("other") == 2  # one user's pool is not another's
    now[0] += 3600 / 3  # one request's worth of refill
    assert limiter.take("u") == 0


def test_store_keeps_hashes_only_and_says_why_a_token_fails(tmp_path: Path) -> None:
    path = tmp_path / "accounts.sqlite3"
    store = AccountStore(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    alice = store.add_user("Alice@Example.test")
    token, secret = store.create_token(alice.id, "laptop")
    assert secret.startswith("dynod_") and len(secret) > 40
    assert secret.encode() not in path.read_bytes() and digest(secret) in path.read_bytes()
    assert store.authenticate(secret)[0].email == "alice@example.test"
    with pytest.raises(UserError, match="Invalid credentials"):
        store.authenticate(secret + "x")
    short, short_secret = store.create_token(alice.id, expires_in=1)
    store._db.execute("UPDATE tokens SET expires_at = ? WHERE id = ?", (time.time() - 1, short.id))
    with pytest.raises(UserError, match="expired"):
        store.authenticate(short_secret)
    bob = store.add_user("bob@example.test")
    with pytest.raises(UserError, match="No such authorization"):
        store.revoke_token(token.id, user_id=bob.id)  # not his to revoke
    store.revoke_token(token.id, user_id=alice.id)
    with pytest.raises(UserError, match="revoked") as caught:
        store.authenticate(secret)
    assert caught.value.status == 401 and caught.value.code == "unauthorized"
    with pytest.raises(UserError):
        store.add_user("alice@example.test")  # emails are unique, case aside
    with pytest.raises(UserError):
        store.add_user("not an email")
    store.close()


def test_access_follows_the_app_not_its_name(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "a.sqlite3")
    alice, bob = store.add_user("alice@example.test"), store.add_user("bob@example.test")
    old = {"id": 1, "name": "shop", "created_at": "2026-12-01T10:00:00Z"}
    key = app_key(old)
    store.grant(key, "shop", alice.id, "owner")
    store.grant(key, "shop", bob.id, "collaborator")
    assert {(u.email, role) for u, role, _ in store.access_of(key)} == {
        ("alice@example.test", "owner"), ("bob@example.test", "collaborator")}
    with pytest.raises(UserError):
        store.revoke_access(key, "shop", alice.id)  # the owner stays
    # The same name made again later is another app: nobody inherits access to it.
    again = {"id": 1, "name": "shop", "created_at": "2026-12-01T11:00:00Z"}
    assert app_key(again) != key and store.role_of(app_key(again), bob.id) is None
    store.revoke_access(key, "shop", bob.id)
    assert store.role_of(key, bob.id) is None
    store.close()


def test_releases_name_who_made_them_as_heroku_shows() -> None:
    from datetime import UTC

    from dynod.cli.releases import format_release_info, format_releases

    releases = [
        {"version": 1, "description": "Initial release", "created_at": "2026-11-26T10:00:00Z",
         "user": {"email": "root@localhost.local"}},
        {"version": 2, "description": "Set A config vars", "created_at": "2026-11-26T11:00:00Z", "current": True,
         "user": {"email": "jane@example.test"}},
    ]
    noon = 1795694400.0  # 2026-11-26T12:00:00Z
    assert format_releases("shop", releases, noon, UTC) == [
        "=== shop Releases - Current: v2",
        "v2  Set A config vars  jane@example.test     2026/11/26 11:00:00 +0000 (~ 60m ago)",
        "v1  Initial release    root@localhost.local  2026/11/26 10:00:00 +0000 (~ 2h ago)",
    ]
    assert "By:            jane@example.test" in format_release_info(releases[1], noon, UTC)


# --- the door, against the fake platform (no sockets) ------------------------------------------------


async def _door(tmp_path: Path):  # type: ignore[no-untyped-def]
    from dynod.api.platform_api import PlatformApi
    from dynod.builds.keys import parse_public_key
    from tests.unit.fake_platform import FakePlatform

    class Platform(FakePlatform):
        """The fake, plus the few routes the layer calls that the plain table's tests never needed."""

        keys: list = []  # noqa: RUF012 - one test's platform

        async def list_keys(self) -> list:
            return [k.to_json() for k in self.keys]

        async def add_key(self, public_key: str) -> dict:
            key = parse_public_key(public_key)  # UserError for anything that is not a key
            self.keys.append(key)
            return key.to_json()

        async def remove_key(self, which: str) -> None:
            self.keys = [k for k in self.keys if k.id != which]

        async def list_builds(self, app: str) -> list:
            self._app(app)
            return []

        async def build_output(self, app: str, build_id: str | None) -> str:
            self._app(app)
            raise NotFound("no such build")

        async def build_source(self, app: str, archive: object, **kwargs: object) -> dict:
            self._app(app)
            raise UserError("the fake builds nothing")

    platform = Platform()
    store = AccountStore(tmp_path / "accounts.sqlite3")
    return platform, store, PlatformApi(platform, store, remote=True, public_url="https://api.test:5443")


def _request(method: str, path: str, token: str | None = None, body: object = None, **headers: str):  # type: ignore[no-untyped-def]
    import json

    from dynod.api.routes import Request
    from tests.unit.test_api_routes import _Body

    data = b"" if body is None else json.dumps(body).encode()
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    if token:
        sent["authorization"] = f"Bearer {token}"
    return Request(method, path, {}, sent, _Body(data))


async def test_no_token_is_401_before_routing_and_touches_nothing(tmp_path: Path) -> None:
    platform, store, door = await _door(tmp_path)
    await platform.create_app("secret-app")
    platform.calls.clear()
    for path in ("/apps/secret-app", "/apps/nope", "/no/such/path", "/shutdown"):
        answer = await door.dispatch(_request("GET", path))
        assert answer.status == 401 and answer.body["id"] == "unauthorized"  # type: ignore[union-attr]
        assert ("www-authenticate", 'Basic realm="dynod"') in answer.headers  # type: ignore[union-attr]
    assert platform.calls == []  # nothing reached the platform, not even a lookup


async def test_owner_collaborator_stranger_and_the_shapes(tmp_path: Path) -> None:
    platform, store, door = await _door(tmp_path)
    owner, stranger = store.add_user("o@example.test"), store.add_user("s@example.test")
    _, owner_token = store.create_token(owner.id)
    _, stranger_token = store.create_token(stranger.id)
    made = await door.dispatch(_request("POST", "/apps", owner_token, {"name": "shop", "stack": "cedar"}))
    assert made.status == 201  # type: ignore[union-attr]
    app = made.body  # type: ignore[union-attr]
    assert app["stack"]["name"] == "debian-13" and app["owner"]["email"] == "o@example.test"
    assert app["git_url"] == "https://api.test:5443/shop.git" and len(app["id"]) == 36
    by_id = await door.dispatch(_request("GET", f"/apps/{app['id']}", owner_token))
    assert by_id.status == 200 and by_id.body["name"] == "shop"  # type: ignore[union-attr]
    refused = await door.dispatch(_request("GET", "/apps/shop", stranger_token))
    assert refused.status == 403 and refused.body["id"] == "forbidden"  # type: ignore[union-attr]
    listed = await door.dispatch(_request("GET", "/apps", stranger_token))
    assert listed.body == []  # type: ignore[union-attr]
    gone = await door.dispatch(_request("DELETE", "/apps/shop", stranger_token))
    assert gone.status == 403 and "shop" in platform.apps  # type: ignore[union-attr]
    v2 = await door.dispatch(_request("GET", "/apps", owner_token, accept="application/vnd.heroku+json; version=2"))
    assert v2.status == 406  # type: ignore[union-attr]
    ranged = await door.dispatch(_request("GET", "/apps", owner_token, range="name ..; max=0"))
    assert ranged.status == 416  # type: ignore[union-attr]
    native = await door.dispatch(_request("GET", "/apps", owner_token, accept="application/vnd.dynod+json"))
    assert native.body[0]["stack"] == "debian-13"  # dynoctl's own shapes  # type: ignore[union-attr]


async def test_socket_mode_is_the_administrator(tmp_path: Path) -> None:
    from dynod.api.platform_api import PlatformApi

    platform, store, _ = await _door(tmp_path)
    socket_door = PlatformApi(platform, store, remote=False)
    await platform.create_app("shop")
    made = await socket_door.dispatch(_request("POST", "/users", body={"email": "jane@example.test"}))
    assert made.status == 201  # type: ignore[union-attr]
    token = await socket_door.dispatch(_request("POST", "/oauth/authorizations", body={"user": "jane@example.test"}))
    assert token.body["access_token"]["token"].startswith("dynod_")  # type: ignore[union-attr]
    plain = await socket_door.dispatch(_request("GET", "/apps/shop"))
    assert plain.body["id"] == platform.apps["shop"]["id"]  # dynod's shape on the socket  # type: ignore[union-attr]
    owner = await socket_door.dispatch(_request("POST", "/apps/shop/collaborators",
                                                body={"user": "jane@example.test", "role": "owner"}))
    assert owner.body["role"] == "owner"  # type: ignore[union-attr]


HOSTILE_BODIES: list[object] = [
    [], "x", 5, None, {"name": ["x"]}, {"updates": "x"}, {"updates": [5]},
    {"updates": [{"type": "web", "quantity": []}]},
    {"updates": [{"type": "web", "quantity": "9" * 30}]}, {"release": []}, {"release": "v0"}, {"slug": 5},
    {"source_blob": {"url": 5}}, {"source_blob": {"url": "file:///etc/passwd"}}, {"source_blob": "x"},
    {"user": 5}, {"user": "nobody@example.test"}, {"expires_in": "x"}, {"expires_in": -1}, {"description": ["x"]},
    {"lines": -1}, {"lines": True}, {"dyno": 5}, {"tail": "yes", "source": ["x"]}, {"hostname": 5},
    {"public_key": "not a key"}, {"email": "x"}, {"admin": "yes", "email": "a@b.test"}, {"quantity": "x"},
    {"command": 5, "attach": True}, {"command": "x" * 9000}, {"maintenance": "on"}, {"name": "Other"},
]


async def test_every_platform_api_route_answers_hostile_input_without_a_500(tmp_path: Path) -> None:
    """Each route of the layer, with hostile bodies and path values: an answer in the error
    shape (never a 500, never an exception that is not a UserError)."""
    from dynod.api.platform_api import _TABLE

    platform, store, door = await _door(tmp_path)
    admin = store.add_user("admin@example.test", admin=True)
    _, token = store.create_token(admin.id)
    await platform.create_app("shop")
    for method, pattern, _handler in _TABLE:
        for value in ("shop", "no-such-app", "%00", "x" * 300, "5b0c7d1e-8f0a-4c8e-9a51-6f1d2d0c9e43"):
            path = "/" + "/".join(value if part.startswith("{") else part for part in pattern)
            for body in HOSTILE_BODIES if method in ("POST", "PATCH", "PUT") else [None]:
                try:
                    answer = await door.dispatch(_request(method, path, token, body))
                except UserError as exc:  # an unread body: the server answers it (in the error shape)
                    assert exc.status < 500, (method, path, body, exc)
                    continue
                status = getattr(answer, "status", 200)
                assert status < 500, (method, path, body, getattr(answer, "body", None))


def test_remote_addresses_and_stored_logins(tmp_path: Path) -> None:
    from dynod.api.client import Remote
    from dynod.cli import credentials

    assert Remote("https://api.example.test:5443", "t").url == "https://api.example.test:5443"
    assert Remote("api.example.test", "t").port == 443
    for bad in ("http://api.example.test", "https://", "https://h:notaport"):
        with pytest.raises(UserError):
            Remote(bad, "t")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    with pytest.raises(UserError, match="Not logged in"):
        credentials.remote_for("https://h.test:5443", env)
    credentials.save(env, {"https://h.test:5443": {"token": "dynod_x", "cafile": ""}})
    stored = tmp_path / "cfg" / "dynod" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert credentials.remote_for("h.test:5443", env).token == "dynod_x"
    assert credentials.remote_for("h.test:5443", {**env, "DYNOD_API_TOKEN": "dynod_y"}).token == "dynod_y"


def test_login_refuses_a_token_in_argv(tmp_path: Path) -> None:
    import io

    from dynod.cli import run_command
    from dynod.cli.command import Context

    out, err = io.StringIO(), io.StringIO()
    ctx = Context(stdout=out, stderr=err, environ={"HOME": str(tmp_path), "DYNOD_HOST": "https://h.test:5443"})
    with pytest.raises(UserError, match="visible to every user"):
        run_command(ctx, ["login", "--token", "dynod_secret"])
    ctx = Context(stdout=out, stderr=err, environ={"HOME": str(tmp_path)})
    with pytest.raises(UserError, match="--host"):
        run_command(ctx, ["login"])
