"""Heroku's Platform API v3 in front of dynod's routes: who is asking, what they may do, and the
shapes, headers and pagination an existing Platform API client expects.

``PlatformApi`` wraps the plain routing table (``routes.ApiRoutes``) in two modes:

- **on the unix socket** (``remote=False``) the caller is root (or the dynod group), the host's
  administrator: every route as before, plus users, tokens and collaborators (``/users``,
  ``/oauth/authorizations``, ``/apps/{app}/collaborators``), which the socket did not have.
- **on the TCP+TLS listener** (``remote=True``) every request is authenticated first, by an API
  token as ``Authorization: Bearer <token>`` or as the password of basic auth (Heroku accepts
  both; heroku3 sends the latter): a request without a valid token is a 401 before any routing,
  so it learns nothing, not even which paths or apps exist. Then: the Accept version (3; 406
  otherwise), the user's rate limit (``RateLimit-Remaining``; 429 when spent), the app's access
  rule (owner or collaborator; an administrator may do anything), and the answer in Heroku's
  shapes (UUID ids, ``{"id","name"}`` references, ``Request-Id``, ``ETag``, ``Range``).

The one exception to "token first" is a log session's ``logplex_url``: it carries its own
short-lived secret, as Heroku's does, because clients fetch it with a bare GET.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from ..accounts.store import NAMESPACE, AccountStore, User, app_key, unauthorized
from ..errors import NotFound, UserError
from .ranges import paginate, parse_range
from .routes import ApiRoutes, JsonResponse, Request, Response, StreamResponse, TextResponse
from .service import Json, PlatformService

# Heroku's default: a pool of 4,500 requests per user, refilled continuously over an hour.
DEFAULT_RATE_LIMIT = 4500
LOG_SESSION_SECONDS = 300  # a logplex_url works for five minutes, like Heroku's
MAX_LOG_SESSIONS = 1000
MAX_LOG_LINES = 1500
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VERSION_TEXT = re.compile(r"v?([0-9]{1,10})")
# The administrator as the API names it when root made something over the unix socket.
ROOT_EMAIL = "root@localhost.local"
ROOT = {"id": str(uuid.uuid5(NAMESPACE, "root")), "email": ROOT_EMAIL}


def derived_id(*parts: object) -> str:
    """A stable UUID for something dynod names otherwise (a release version, a dyno name)."""
    return str(uuid.uuid5(NAMESPACE, "\0".join(str(p) for p in parts)))


@dataclass(frozen=True, slots=True)
class HeaderedJson(JsonResponse):
    """A JSON answer with the Platform API's own headers (Request-Id, RateLimit-Remaining, ...)."""

    headers: tuple[tuple[str, str], ...] = ()


class RateLimiter:
    """A token bucket per key: ``capacity`` requests, refilled at capacity per hour."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> int:
        """Spend one request; the whole requests left. A 429 UserError when none is left."""
        now = self._clock()
        level, then = self._buckets.get(key, (float(self.capacity), now))
        level = min(float(self.capacity), level + (now - then) * self.capacity / 3600.0)
        if level < 1.0:
            self._buckets[key] = (level, now)
            raise UserError("Your account reached the API rate limit: wait a few minutes, then make fewer "
                            "requests.", status=429, code="rate_limit")
        self._buckets[key] = (level - 1.0, now)
        return int(level - 1.0)


def credentials(headers: dict[str, str]) -> str | None:
    """The API token a request carries: ``Bearer T``, or basic auth with T as the password."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def check_accept(headers: dict[str, str]) -> None:
    """Version 3 (or a 3.x variant such as heroku3's ``3.cedar-acm``), or no version named."""
    for media in headers.get("accept", "").split(","):
        kind, *params = (part.strip() for part in media.split(";"))
        if kind.lower() != "application/vnd.heroku+json":
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "version":
                version = value.strip().strip('"')
                if version != "3" and not version.startswith("3."):
                    raise UserError(f"This API speaks version 3 only, not {version[:20]!r}: send "
                                    "Accept: application/vnd.heroku+json; version=3.",
                                    status=406, code="not_acceptable")


def parse_quantity(value: object, process: str) -> int:
    """A formation quantity as Heroku takes it: a number or a numeric string ("2")."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}", value.strip()):
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise UserError(f"Quantity for {process} must be a whole number (or a string of digits).")


def release_version(value: object) -> int:
    """A release named by number, "v3", "3" or its UUID is resolved elsewhere; this is the number."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**31 - 1:
        return value
    if isinstance(value, str) and (match := _VERSION_TEXT.fullmatch(value.strip())) and \
            1 <= int(match.group(1)) <= 2**31 - 1:
        return int(match.group(1))
    raise UserError(f"Invalid release {str(value)[:40]!r}: give its id or its version (3 or v3).")


class _EmptyBody:
    async def read(self, limit: int) -> bytes:
        return b""

    async def chunks(self) -> AsyncIterator[bytes]:
        return
        yield b""  # pragma: no cover - makes this an async generator


class _JsonBody:
    def __init__(self, value: object) -> None:
        self._data = json.dumps(value).encode()

    async def read(self, limit: int) -> bytes:
        return self._data

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._data


@dataclass(frozen=True, slots=True)
class _LogSession:
    app: str
    query: dict[str, str]
    expires: float


Handler = Callable[["PlatformApi", Request, dict[str, str], "User | None"], Awaitable[Any]]
_TABLE: list[tuple[str, tuple[str, ...], Handler]] = []


def _on(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _TABLE.append((method, tuple(pattern.strip("/").split("/")), handler))
        return handler
    return register


def _match(method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
    from urllib.parse import unquote

    segments = tuple(unquote(s) for s in path.strip("/").split("/"))
    for want_method, pattern, handler in _TABLE:
        if want_method != method or len(pattern) != len(segments):
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, segments, strict=True):
            if want.startswith("{") and got:
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            return handler, params
    return None


def wants_native(request: Request) -> bool:
    """dynoctl's remote requests ask for dynod's own shapes, which it reads (client.Remote)."""
    return "application/vnd.dynod+json" in request.headers.get("accept", "")


def _native(handler: Handler) -> Handler:
    handler.native = True  # type: ignore[attr-defined]  # answers dynod's shapes when asked for them
    return handler


def _forbidden(message: str) -> UserError:
    return UserError(message, status=403, code="forbidden")


def _is_admin(actor: User | None) -> bool:
    return actor is None or actor.admin


def _person(user: User | None) -> Json:
    return dict(ROOT) if user is None else {"id": user.id, "email": user.email}


class PlatformApi(ApiRoutes):
    """dynod's routes with users, tokens and access rules; on TCP, the Platform API v3 itself."""

    def __init__(self, platform: PlatformService, accounts: AccountStore, *, remote: bool,
                 rate_limit: int = DEFAULT_RATE_LIMIT, public_url: str = "") -> None:
        super().__init__(platform)
        self.accounts = accounts
        self.remote = remote
        self.limiter = RateLimiter(rate_limit)
        self.public_url = public_url.rstrip("/")
        self._log_sessions: OrderedDict[str, _LogSession] = OrderedDict()
        self._outputs: dict[str, tuple[str, str, float]] = {}  # output secret -> (app, build id, expiry)
        if remote:
            from .rendezvous import Rendezvous

            self.rendezvous: Rendezvous | None = Rendezvous()
        else:
            self.rendezvous = None

    # -- the door ----------------------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        if not self.remote:
            found = _match(request.method, request.path)
            if found is not None and getattr(found[0], "socket", False):
                handler, params = found
                return _plain(await handler(self, request, params, None))
            return await super().dispatch(request)
        request_id = str(uuid.uuid4())
        headers: list[tuple[str, str]] = [("request-id", request_id)]
        try:
            if request.method == "GET" and request.path.startswith("/log-sessions/"):
                return await self._log_stream(request.path.removeprefix("/log-sessions/"))
            if request.method == "GET" and request.path.startswith("/build-outputs/"):
                return await self._build_output(request.path.removeprefix("/build-outputs/"))
            secret = credentials(request.headers)
            if secret is None:
                self.limiter.take("anonymous")
                raise unauthorized("No credentials: send your API token as 'Authorization: Bearer TOKEN' "
                                   "(dynoctl login, dynoctl auth:token).")
            try:
                user, _token = self.accounts.authenticate(secret)
            except UserError:
                self.limiter.take("anonymous")  # guessing tokens costs from one shared pool
                raise
            headers.append(("ratelimit-remaining", str(self.limiter.take(user.id))))
            check_accept(request.headers)
            answer = await self._route(request, user)
            if isinstance(answer, JsonResponse):
                if not wants_native(request):
                    await self._fill_app_ids(answer.body)
                return self._decorate(request, answer, headers)  # a bad Range is an answer too
            return answer
        except UserError as exc:
            finish = getattr(request.body, "finish_if_buffered", None)
            if finish is not None:
                finish()  # an empty GET body is already here: the answer can keep its headers
            if not getattr(request.body, "complete", True):
                raise  # an unread body: the server answers and closes instead of draining it
            error: Json = {"id": exc.code, "message": str(exc)}
            if exc.status == 401:  # git (and browsers) send credentials only when asked like this
                headers.append(("www-authenticate", 'Basic realm="dynod"'))
            return HeaderedJson(exc.status, error, headers=tuple(headers))

    async def _fill_app_ids(self, body: Any) -> None:
        """Heroku's app references are {"id", "name"}: give the id to those that name only the app
        (the add-on routes' answers, the passthrough routes')."""
        refs: list[dict[str, Any]] = []
        pending: list[Any] = [body]
        while pending:
            item = pending.pop()
            if isinstance(item, dict):
                app = item.get("app")
                if isinstance(app, dict) and isinstance(app.get("name"), str) and "id" not in app:
                    refs.append(app)
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
        if refs:
            keys = {a["name"]: app_key(a) for a in await self.platform.list_apps()}
            for ref in refs:
                if ref["name"] in keys:
                    ref["id"] = keys[ref["name"]]

    def _decorate(self, request: Request, answer: JsonResponse, headers: list[tuple[str, str]]) -> Response:
        body, status = answer.body, answer.status
        paged = not wants_native(request) or "range" in request.headers  # dynoctl reads whole lists
        if isinstance(body, list) and request.method == "GET" and status == 200 and paged:
            fields = _range_fields(body)
            wanted = parse_range(request.headers.get("range"), fields)
            body, next_range = paginate(body, wanted)
            headers.append(("accept-ranges", ", ".join(fields)))
            if next_range is not None:
                status = 206
                headers.append(("next-range", next_range))
        if request.method == "GET" and status in (200, 206) and body is not None:
            etag = '"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32] + '"'
            headers.append(("etag", etag))
            if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
                return HeaderedJson(304, None, headers=tuple(headers))
        return HeaderedJson(status, body, after=answer.after, headers=tuple(headers))

    async def _route(self, request: Request, user: User) -> Response:
        from .git_http import parse_git_path

        if (git := parse_git_path(request.path)) is not None:
            return await self._git(request, user, *git)
        found = _match(request.method, request.path)
        if found is not None and (not wants_native(request) or getattr(found[0], "native", False)):
            handler, params = found
            return _plain(await handler(self, request, params, user))
        segments = request.path.strip("/").split("/")
        if len(segments) >= 2 and segments[0] == "apps" and segments[1]:
            from urllib.parse import quote, unquote

            app = await self.app_for(unquote(segments[1]), user)
            path = "/".join(["", "apps", quote(app["name"], safe=""), *segments[2:]])
            query = request.query
            if segments[2:] == ["builds"]:  # who started a build is the token's user, not a parameter
                query = {**query, "user": user.email}
            answer = await super().dispatch(replace(request, path=path, query=query))
            if isinstance(answer, JsonResponse) and answer.status < 300 and (request.method, segments[2:]) in (
                    ("PATCH", ["config-vars"]), ("POST", ["releases"])):  # dynoctl's own shapes: still the caller's
                release = answer.body if request.method == "POST" else await self.platform.get_release(
                    app["name"], None)
                self.made_release(app, release, user)
            return answer
        if not _is_admin(user) and segments[0] in ("addons", "addon-attachments"):
            return await self._addons_outside_apps(request, user, segments)
        if not _is_admin(user) and not _public(request):
            raise _forbidden(f"{request.method} {request.path[:80]} is for the host's administrator only.")
        return await super().dispatch(request)

    async def _addons_outside_apps(self, request: Request, user: User, segments: list[str]) -> Response:
        """/addons and /addon-attachments name no app in their path: a user sees and attaches only
        the add-ons of apps they may act on (the add-on routes are dynod/addons' own)."""
        mine = {a["name"] for a in await self.apps_of(user)}

        def ours(item: Any) -> bool:
            return isinstance(item, dict) and (item.get("app") or {}).get("name") in mine

        if request.method == "GET" and len(segments) == 1:
            answer = await super().dispatch(request)
            if isinstance(answer, JsonResponse) and isinstance(answer.body, list):
                return JsonResponse(answer.status, [item for item in answer.body if ours(item)])
            return answer
        if request.method == "GET" and len(segments) == 2 and segments[0] == "addons":
            answer = await super().dispatch(request)
            if isinstance(answer, JsonResponse) and not ours(answer.body):
                raise NotFound("Couldn't find that add-on.")
            return answer
        if request.method == "POST" and segments == ["addon-attachments"]:
            body = await _json(request)
            addon, app = body.get("addon"), body.get("app")
            addon = addon.get("name") if isinstance(addon, dict) else addon
            app = app.get("name") if isinstance(app, dict) else app
            if isinstance(app, str) and app:
                await self.app_for(app, user)  # attaching to an app is acting on it
            if isinstance(addon, str) and addon:
                found = await self.native("GET", f"/addons/{_q(addon)}")
                if not ours(_body_of(found)):
                    raise NotFound("Couldn't find that add-on.")
            return await self.native("POST", "/addon-attachments", body)
        raise _forbidden(f"{request.method} {request.path[:80]} is for the host's administrator; use "
                         "the app's own add-on routes (/apps/APP/addons).")

    async def _git(self, request: Request, user: User, name: str, rest: str) -> Response:
        """git push/fetch over HTTPS to the app's repository (dynod/api/git_http.py)."""
        from ..builds.git import repo_path
        from .git_http import SERVICES, advertise, rpc, spool

        app = await self.app_for(name, user)
        deploys = getattr(self.platform, "deploys", None)
        if deploys is None:
            raise NotFound("This dynod keeps no git repositories.")
        repo = repo_path(deploys.repos_dir, app["name"])
        if not repo.is_dir():
            raise NotFound(f"{app['name']} has no git repository.")
        if request.method == "GET" and rest == "info/refs":
            return await advertise(repo, request.query.get("service", ""))
        if request.method == "POST" and rest in SERVICES:
            return await rpc(repo, rest, await spool(request), pusher=user.email)
        raise NotFound(f"No such git endpoint {rest[:60]!r}: push to https://HOST/{app['name']}.git.")

    # -- apps and who may touch them ----------------------------------------------------------------

    async def find_app(self, ref: str) -> Json:
        if _UUID.fullmatch(ref):
            for app in await self.platform.list_apps():
                if app_key(app) == ref:
                    return app
            raise NotFound("Couldn't find that app.")
        return await self.platform.get_app(ref)

    async def app_for(self, ref: str, actor: User | None, *, owner: bool = False) -> Json:
        """The app ``ref`` names, if ``actor`` may act on it (``owner``: only its owner may)."""
        app = await self.find_app(ref)
        if _is_admin(actor):
            return app
        assert actor is not None
        role = self.accounts.role_of(app_key(app), actor.id)
        if role is None:
            raise _forbidden(f"You do not have access to the app {app['name']}.")
        if owner and role != "owner":
            raise _forbidden(f"Only the owner of {app['name']} may do this.")
        return app

    async def apps_of(self, actor: User | None) -> list[Json]:
        apps = await self.platform.list_apps()
        if _is_admin(actor):
            return apps
        assert actor is not None
        keys = self.accounts.keys_of(actor.id)
        return [a for a in apps if app_key(a) in keys]

    def owner_of(self, app: Json) -> User | None:
        for user, role, _ in self.accounts.access_of(app_key(app)):
            if role == "owner":
                return user
        return None

    def made_release(self, app: Json, release: Json, actor: User | None) -> None:
        if actor is not None and isinstance(release.get("version"), int):
            self.accounts.record_release(app_key(app), release["version"], actor.id)

    # -- Heroku's shapes ----------------------------------------------------------------------------

    def app_json(self, app: Json) -> Json:
        key = app_key(app)
        stack = {"id": derived_id("stack", app.get("stack")), "name": app.get("stack")}
        owner = self.owner_of(app)
        base = self.public_url
        return {
            **app, "id": key, "stack": stack, "build_stack": stack,
            "region": {"id": derived_id("region", "local"), "name": "local"},
            "owner": _person(owner), "organization": None, "team": None, "space": None,
            "acm": False, "archived_at": None, "buildpack_provided_description": None,
            "git_url": f"{base}/{app['name']}.git" if base else None, "internal_routing": None,
            "repo_size": None, "slug_size": None, "updated_at": app.get("released_at") or app.get("created_at"),
        }

    async def release_people(self, app: Json) -> dict[int, User]:
        """Who made each release: recorded by this layer, else the user its build names (a git
        push over HTTPS or a user's SSH key); a release no user made is the administrator's."""
        people = dict(self.accounts.release_users(app_key(app)))
        builds = getattr(self.platform, "list_builds", None)
        if builds is not None:
            for build in await builds(app["name"]):
                version, who = build.get("release"), build.get("user")
                if isinstance(version, int) and version not in people and isinstance(who, str) and "@" in who:
                    try:
                        people[version] = self.accounts.get_user(who)
                    except NotFound:
                        pass
        return people

    def release_json(self, app: Json, release: Json, users: dict[int, User] | None = None) -> Json:
        key = app_key(app)
        users = self.accounts.release_users(key) if users is None else users
        return {
            **release, "id": derived_id("release", key, release["version"]),
            "app": {"id": key, "name": app["name"]}, "user": _person(users.get(release["version"])),
            "updated_at": release.get("created_at"), "output_stream_url": None,
            "addon_plan_names": [a["plan"]["name"] for a in release.get("addons") or []],
            "eligible_for_rollback": release.get("slug") is not None,
        }

    def formation_json(self, app: Json, item: Json) -> Json:
        key = app_key(app)
        return {**item, "id": derived_id("formation", key, item["type"]), "app": {"id": key, "name": app["name"]},
                "created_at": app.get("created_at"), "updated_at": app.get("released_at") or app.get("created_at")}

    def dyno_json(self, app: Json, dyno: Json) -> Json:
        key = app_key(app)
        version = (dyno.get("release") or {}).get("version")
        return {**dyno, "id": derived_id("dyno", key, dyno["name"], dyno.get("created_at")),
                "app": {"id": key, "name": app["name"]}, "attach_url": None,
                "release": {"id": derived_id("release", key, version), "version": version}}

    async def resolve_release(self, app: Json, ref: object) -> int:
        if isinstance(ref, str) and _UUID.fullmatch(ref):
            key = app_key(app)
            for release in await self.platform.list_releases(app["name"]):
                if derived_id("release", key, release["version"]) == ref:
                    return int(release["version"])
            raise NotFound(f"Couldn't find that release of {app['name']}.")
        return release_version(ref)

    # -- log sessions: Heroku's logplex_url ----------------------------------------------------------

    def new_log_session(self, app: str, query: dict[str, str]) -> str:
        now = time.monotonic()
        while self._log_sessions and (len(self._log_sessions) >= MAX_LOG_SESSIONS
                                      or next(iter(self._log_sessions.values())).expires < now):
            self._log_sessions.popitem(last=False)
        secret = secrets.token_urlsafe(32)
        self._log_sessions[secret] = _LogSession(app, query, now + LOG_SESSION_SECONDS)
        return secret

    def new_output(self, app: str, build_id: str) -> str:
        """A secret URL path for a build's output (Heroku's output_stream_url needs no token).

        Its own store, apart from log sessions: an output URL shown in a CI log must open that
        build's output and nothing else (not the app's log stream)."""
        secret = secrets.token_urlsafe(32)
        self._outputs[secret] = (app, build_id, time.monotonic() + LOG_SESSION_SECONDS)
        while len(self._outputs) > MAX_LOG_SESSIONS:
            self._outputs.pop(next(iter(self._outputs)))
        return secret

    async def _build_output(self, secret: str) -> Response:
        found = self._outputs.get(secret)
        if found is None or found[2] < time.monotonic():
            raise NotFound("This build output URL has expired or never existed: get the build again.")
        return TextResponse(200, await self.platform.build_output(found[0], found[1]))

    async def _log_stream(self, secret: str) -> Response:
        session = self._log_sessions.get(secret)
        if session is None or session.expires < time.monotonic():
            raise NotFound("This log session has expired or never existed: start a new one.")
        from urllib.parse import quote

        return await super().dispatch(Request(method="GET", path=f"/apps/{quote(session.app, safe='')}/logs",
                                              query=session.query, headers={}, body=_EmptyBody()))

    async def native(self, method: str, path: str, body: object = None, query: dict[str, str] | None = None
                     ) -> Response:
        """Call dynod's own route (its checks included) from a translated request."""
        return await super().dispatch(Request(method=method, path=path, query=query or {}, headers={},
                                              body=_EmptyBody() if body is None else _JsonBody(body)))


def _plain(value: Any) -> Response:
    if isinstance(value, JsonResponse | TextResponse | StreamResponse):
        return value
    status, body = value
    return JsonResponse(status, body)


def _public(request: Request) -> bool:
    """Routes outside any app that every user may call (the others are the administrator's)."""
    path = request.path.rstrip("/")
    return request.method == "GET" and (path in ("/stacks", "/addon-services")
                                        or path.startswith("/addon-services/"))


def _range_fields(items: list[Any]) -> list[str]:
    first = items[0] if items and isinstance(items[0], dict) else {}
    preferred = [f for f in ("version", "id", "name", "type", "hostname", "created_at") if f in first]
    # Every Platform API resource can be ranged by id, and clients ask for it by default (heroku3
    # sends "id ..;"): a list whose items have none keeps its own order.
    others = [k for k, v in first.items() if k not in preferred and isinstance(v, str | int | float | type(None))]
    return preferred + others + ([] if "id" in preferred or "id" in others else ["id"])


def _body_of(answer: Response) -> Any:
    if not isinstance(answer, JsonResponse):
        raise TypeError(f"expected a JSON answer, got {type(answer).__name__}")
    return answer.body


async def _json(request: Request) -> dict[str, Any]:
    from .routes import _json_object

    return await _json_object(request)


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


# --- account and users --------------------------------------------------------------------------------


def _account_json(user: User) -> Json:
    created = _rfc3339(user.created_at)
    return {"id": user.id, "email": user.email, "name": None, "created_at": created, "updated_at": created,
            "verified": True, "two_factor_authentication": False, "allow_tracking": False, "beta": False,
            "last_login": None, "default_organization": None, "default_team": None, "identity_provider": None,
            "sms_number": None, "suspended_at": None, "delinquent_at": None, "federated": False,
            "admin": user.admin}


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _socket(handler: Handler) -> Handler:
    handler.socket = True  # type: ignore[attr-defined]  # also served on the unix socket (root)
    handler.native = True  # type: ignore[attr-defined]  # one shape for both
    return handler


@_native
@_on("GET", "/account")
@_on("GET", "/users/~")
async def _account(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    assert user is not None
    return 200, _account_json(user)


@_native
@_on("GET", "/account/rate-limits")
async def _rate_limits(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    assert user is not None
    return 200, {"remaining": api.limiter.take(user.id)}


@_socket
@_on("GET", "/users")
async def _list_users(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    if not _is_admin(user):
        raise _forbidden("Only the host's administrator may list users.")
    return 200, [_account_json(u) for u in api.accounts.list_users()]


@_socket
@_on("POST", "/users")
async def _add_user(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    if not _is_admin(user):
        raise _forbidden("Only the host's administrator may add users.")
    body = await _json(request)
    admin = body.get("admin", False)
    if not isinstance(admin, bool):
        raise UserError("Field 'admin' must be true or false.")
    return 201, _account_json(api.accounts.add_user(body.get("email"), admin=admin))  # type: ignore[arg-type]


# --- authorizations: API tokens -----------------------------------------------------------------------


def _authorization_json(api: PlatformApi, token: Any, secret: str | None = None) -> Json:
    owner = api.accounts.get_user(token.user_id)
    expires_in = None if token.expires_at is None else max(0, int(token.expires_at - time.time()))
    return {"id": token.id, "description": token.description, "scope": ["global"],
            "created_at": _rfc3339(token.created_at), "updated_at": _rfc3339(token.created_at),
            "expires_in": expires_in, "user": {"id": owner.id, "email": owner.email, "full_name": None},
            "access_token": None if secret is None else {"id": token.id, "token": secret, "expires_in": expires_in},
            "client": None, "grant": None, "refresh_token": None, "session": None}


def _token_owner(api: PlatformApi, body: dict[str, Any], user: User | None) -> User:
    named = body.get("user")
    if named is not None and not isinstance(named, str):
        raise UserError("Field 'user' must be the user's email or id.")
    if user is None:  # root on the socket: for a named user, else the administrator account
        return api.accounts.get_user(named) if named else _root_user(api)
    if named and named not in (user.id, user.email) and not user.admin:
        raise _forbidden("You may make tokens for yourself only.")
    return api.accounts.get_user(named) if named else user


def _root_user(api: PlatformApi) -> User:
    # The administrator's own account, made the first time root asks for a token.
    try:
        return api.accounts.get_user(ROOT_EMAIL)
    except NotFound:
        return api.accounts.add_user(ROOT_EMAIL, admin=True)


@_socket
@_on("GET", "/oauth/authorizations")
async def _list_authorizations(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    tokens = api.accounts.list_tokens(None if user is None else user.id)
    return 200, [_authorization_json(api, t) for t in tokens]


@_socket
@_on("POST", "/oauth/authorizations")
async def _create_authorization(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    body = await _json(request)
    owner = _token_owner(api, body, user)
    description = body.get("description", "")
    token, secret = api.accounts.create_token(owner.id, description if isinstance(description, str) else 0,  # type: ignore[arg-type]
                                              expires_in=body.get("expires_in"))
    return 201, _authorization_json(api, token, secret)


@_socket
@_on("DELETE", "/oauth/authorizations/{id}")
async def _revoke_authorization(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    token = api.accounts.revoke_token(p["id"], user_id=None if _is_admin(user) else user.id)  # type: ignore[union-attr]
    return 200, _authorization_json(api, token)


# --- apps ----------------------------------------------------------------------------------------------


@_native
@_on("GET", "/apps")
@_on("GET", "/users/~/apps")
async def _list_apps(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    apps = await api.apps_of(user)
    return 200, apps if wants_native(request) else [api.app_json(a) for a in apps]


@_on("GET", "/users/{user}/apps")
async def _list_user_apps(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    assert user is not None
    if p["user"] not in (user.id, user.email) and not user.admin:
        raise _forbidden("You may list your own apps only (/users/~/apps).")
    target = api.accounts.get_user(p["user"])
    return 200, [api.app_json(a) for a in await api.apps_of(target if not target.admin else None)
                 if target.admin or api.accounts.role_of(app_key(a), target.id) is not None]


@_native
@_on("POST", "/apps")
async def _create_app(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    body = await _json(request)
    # Heroku's clients name a stack and a region (heroku3 sends "cedar"): this host has one of each.
    app = _body_of(await api.native("POST", "/apps", {"name": body["name"]} if body.get("name") else {}))
    if user is not None:
        api.accounts.grant(app_key(app), app["name"], user.id, "owner")
        if app.get("current_release"):  # v1, "Initial release": the creator's, as on Heroku
            api.made_release(app, {"version": app["current_release"]}, user)
    return 201, app if wants_native(request) else api.app_json(app)


@_on("GET", "/apps/{app}")
async def _get_app(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    return 200, api.app_json(await api.app_for(p["app"], user))


@_on("PATCH", "/apps/{app}")
async def _patch_app(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    body = await _json(request)
    if "name" in body and body["name"] != app["name"]:
        raise UserError("dynod cannot rename an app: make a new one and deploy to it.")
    changes = {k: v for k, v in body.items() if k in ("maintenance", "routing_policy")}
    if changes:
        app = _body_of(await api.native("PATCH", f"/apps/{_q(app['name'])}", changes))
    return 200, api.app_json(await api.find_app(app["name"]))


@_native
@_on("DELETE", "/apps/{app}")
async def _destroy_app(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user, owner=True)
    shown = api.app_json(app)
    await api.native("DELETE", f"/apps/{_q(app['name'])}")
    api.accounts.forget_app(app_key(app))
    return (204, None) if wants_native(request) else (200, shown)


# --- collaborators (dynoctl access) --------------------------------------------------------------------


def _collaborator_json(app: Json, user: User, role: str, since: float) -> Json:
    key = app_key(app)
    return {"id": derived_id("collaborator", key, user.id), "app": {"id": key, "name": app["name"]},
            "user": {"id": user.id, "email": user.email, "federated": False}, "role": role,
            "permissions": [], "created_at": _rfc3339(since), "updated_at": _rfc3339(since)}


@_socket
@_on("GET", "/apps/{app}/collaborators")
async def _list_collaborators(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    return 200, [_collaborator_json(app, u, role, since) for u, role, since in api.accounts.access_of(app_key(app))]


@_socket
@_on("POST", "/apps/{app}/collaborators")
async def _add_collaborator(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user, owner=True)
    body = await _json(request)
    named = body.get("user")
    if not isinstance(named, str) or not named:
        raise UserError("Field 'user' is required: the collaborator's email or id.")
    who = api.accounts.get_user(named)
    # An app made over the socket has no owner yet: its first user given by root becomes it.
    role = "owner" if user is None and api.owner_of(app) is None and body.get("role") == "owner" else "collaborator"
    api.accounts.grant(app_key(app), app["name"], who.id, role)
    return 201, _collaborator_json(app, who, role, time.time())


@_socket
@_on("DELETE", "/apps/{app}/collaborators/{user}")
async def _remove_collaborator(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user, owner=True)
    who = api.accounts.get_user(p["user"])
    role = api.accounts.role_of(app_key(app), who.id) or "collaborator"
    api.accounts.revoke_access(app_key(app), app["name"], who.id)
    return 200, _collaborator_json(app, who, role, time.time())


# --- config vars and releases --------------------------------------------------------------------------


@_on("PATCH", "/apps/{app}/config-vars")
async def _update_config(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    body = await _json(request)
    config = _body_of(await api.native("PATCH", f"/apps/{_q(app['name'])}/config-vars", body))
    api.made_release(app, await api.platform.get_release(app["name"], None), user)
    return 200, config


def _dynod_shapes(api: PlatformApi, request: Request) -> bool:
    return not api.remote or wants_native(request)


@_socket
@_on("GET", "/apps/{app}/releases")
async def _list_releases(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    users = await api.release_people(app)
    releases = await api.platform.list_releases(app["name"])
    if _dynod_shapes(api, request):  # dynod's shape, with who made each (dynoctl releases shows it)
        return 200, [{**r, "user": _person(users.get(r["version"]))} for r in releases]
    return 200, [api.release_json(app, r, users) for r in releases]


@_socket
@_on("GET", "/apps/{app}/releases/{release}")
async def _get_release(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    version = None if p["release"] == "current" else await api.resolve_release(app, p["release"])
    release = await api.platform.get_release(app["name"], version)
    users = await api.release_people(app)
    if _dynod_shapes(api, request):
        return 200, {**release, "user": _person(users.get(release["version"]))}
    return 200, api.release_json(app, release, users)


@_on("GET", "/apps/{app}/releases/{release}/config-vars")
async def _release_config(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    version = await api.resolve_release(app, p["release"])
    ledger = getattr(api.platform, "ledger", None)
    if ledger is None:
        raise NotFound("This dynod keeps no release history.")
    return 200, dict(ledger.get_release(app["name"], version).config)


@_on("POST", "/apps/{app}/releases")
async def _create_release(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    body = await _json(request)
    if "release" in body:  # Heroku's rollback: the release to go back to, by id or version
        if "slug" in body:
            raise UserError("Give either 'slug' (a new release) or 'release' (a rollback), not both.")
        version = await api.resolve_release(app, body["release"])
        release = _body_of(await api.native("POST", f"/apps/{_q(app['name'])}/releases", {"rollback": version}))
    else:
        native = {k: body[k] for k in ("slug", "description", "rollback") if k in body}
        release = _body_of(await api.native("POST", f"/apps/{_q(app['name'])}/releases", native))
    api.made_release(app, release, user)
    return 201, api.release_json(app, release)


# --- formation and dynos -------------------------------------------------------------------------------


@_on("GET", "/apps/{app}/formation")
async def _formation(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    return 200, [api.formation_json(app, f) for f in await api.platform.get_formation(app["name"])]


def _formation_update(item: object, process: str | None = None) -> Json:
    if not isinstance(item, dict):
        raise UserError("Each formation update must be an object like {\"type\": \"web\", \"quantity\": 2}.")
    kind = process or item.get("type") or item.get("process")
    if not isinstance(kind, str) or not kind:
        raise UserError("Each formation update needs a 'type' (a process type such as web).")
    update: Json = {"type": kind}
    if item.get("quantity") is not None:
        update["quantity"] = parse_quantity(item["quantity"], kind)
    if item.get("size") is not None:
        update["size"] = item["size"]
    return update


async def _type_of(api: PlatformApi, app: Json, ref: str) -> str:
    if _UUID.fullmatch(ref):
        for item in await api.platform.get_formation(app["name"]):
            if derived_id("formation", app_key(app), item["type"]) == ref:
                return str(item["type"])
        raise NotFound(f"Couldn't find that formation of {app['name']}.")
    return ref


@_on("PATCH", "/apps/{app}/formation")
async def _batch_formation(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    body = await _json(request)
    updates = body.get("updates")
    if not isinstance(updates, list) or not updates:
        raise UserError("Field 'updates' must be a non-empty list of {\"type\", \"quantity\"?, \"size\"?}.")
    checked = [_formation_update(u) for u in updates]
    result = _body_of(await api.native("PATCH", f"/apps/{_q(app['name'])}/formation", {"updates": checked}))
    changed = {u["type"] for u in checked}
    return 200, [api.formation_json(app, f) for f in result if f["type"] in changed]


@_on("GET", "/apps/{app}/formation/{type}")
async def _formation_one(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    kind = await _type_of(api, app, p["type"])
    for item in await api.platform.get_formation(app["name"]):
        if item["type"] == kind:
            return 200, api.formation_json(app, item)
    raise NotFound(f"Couldn't find that formation: {app['name']} has no process type {kind[:63]!r}.")


@_on("PATCH", "/apps/{app}/formation/{type}")
async def _formation_update_one(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    kind = await _type_of(api, app, p["type"])
    update = _formation_update(await _json(request), kind)
    result = _body_of(await api.native("PATCH", f"/apps/{_q(app['name'])}/formation", {"updates": [update]}))
    return 200, next(api.formation_json(app, f) for f in result if f["type"] == kind)


@_on("GET", "/apps/{app}/dynos")
async def _list_dynos(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    return 200, [api.dyno_json(app, d) for d in await api.platform.list_dynos(app["name"])]


@_on("GET", "/apps/{app}/dynos/{dyno}")
async def _get_dyno(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    for dyno in await api.platform.list_dynos(app["name"]):
        shown = api.dyno_json(app, dyno)
        if p["dyno"] in (dyno["name"], shown["id"]):
            return 200, shown
    raise NotFound(f"Couldn't find that dyno: {app['name']} has no dyno {p['dyno'][:63]!r}.")


@_on("POST", "/apps/{app}/dynos")
async def _run_dyno(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    body = await _json(request)
    if body.get("attach") is True and not wants_native(request):
        return 201, await _rendezvous_dyno(api, app, body)
    native = {k: body[k] for k in ("command", "size", "env") if k in body}
    dyno = _body_of(await api.native("POST", f"/apps/{_q(app['name'])}/dynos", {**native, "attach": False}))
    return 201, api.dyno_json(app, dyno)


async def _rendezvous_dyno(api: PlatformApi, app: Json, body: dict[str, Any]) -> Json:
    """A one-off dyno waiting for its client on Heroku's rendezvous protocol (rendezvous.py)."""
    from urllib.parse import urlsplit

    from .routes import _command, _env, _optional_str

    if api.rendezvous is None or not api.public_url:
        raise UserError("Attached one-off dynos need the TCP listener: set [api] listen.")
    command, size, env = _command(body), _optional_str(body, "size"), _env(body)
    dyno = await api.platform.run_attached(app["name"], command, size, env, tty=False, rows=24, cols=80)
    try:
        secret = api.rendezvous.add(dyno)
    except BaseException:
        await dyno.kill()
        raise
    where = urlsplit(api.public_url)
    now = _rfc3339(time.time())
    shown = api.dyno_json(app, {"name": dyno.name, "type": "run", "state": "starting", "size": size or "standard-1X",
                                "command": command, "release": {"version": app.get("current_release")},
                                "created_at": now, "updated_at": now})
    return {**shown, "attach_url": f"rendezvous://{where.hostname}:{where.port or 443}/{secret}"}


# --- log sessions ---------------------------------------------------------------------------------------


@_on("POST", "/apps/{app}/log-sessions")
async def _log_session(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    body = await _json(request)
    query: dict[str, str] = {}
    lines = body.get("lines", 100)
    if isinstance(lines, bool) or not isinstance(lines, int) or not 0 <= lines <= MAX_LOG_LINES:
        raise UserError(f"Field 'lines' must be a whole number from 0 to {MAX_LOG_LINES}.")
    query["lines"] = str(max(lines, 1))
    if body.get("tail"):
        query["tail"] = "true"
    for field, name in (("dyno", "ps"), ("source", "source")):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise UserError(f"Field {field!r} must be a string.")
        query[name] = "dynod" if field == "source" and value == "heroku" else value
    # Checked now, with the app's name, so the URL never answers an error it could have given here.
    await api.native("GET", f"/apps/{_q(app['name'])}/logs", query={**query, "tail": "", "lines": "1"})
    secret = api.new_log_session(app["name"], query)
    base = api.public_url or f"https://{request.headers.get('host', 'localhost')}"
    now = _rfc3339(time.time())
    return 201, {"id": derived_id("log-session", secret), "logplex_url": f"{base}/log-sessions/{secret}",
                 "created_at": now, "updated_at": now}


# --- builds: a source_blob URL (Heroku's way) or a tarball upload (dynoctl's) ---------------------------


def _build_json(api: PlatformApi, app: Json, build: Json, secret: str | None = None) -> Json:
    key = app_key(app)
    release = build.get("release")
    users = api.accounts.release_users(key)
    by = users.get(release) if isinstance(release, int) else None
    base = api.public_url
    return {
        **build, "app": {"id": key, "name": app["name"]},
        "release": None if release is None else {"id": derived_id("release", key, release), "version": release},
        "slug": None if not build.get("slug_id") else {"id": build["slug_id"]},
        "source_blob": {"url": None, "checksum": None, "version": build.get("source_version"),
                        "version_description": None},
        "output_stream_url": f"{base}/build-outputs/{secret}" if secret and base else None,
        "buildpacks": [{"url": b, "name": b} for b in build.get("buildpacks") or []],
        "stack": app.get("stack"), "user": _person(by) if by or build.get("user") in (None, "api", "local")
        else {"id": None, "email": build.get("user")},
        "created_at": _rfc3339(build.get("created_at")),
        "updated_at": _rfc3339(build.get("finished_at") or build.get("created_at")),
    }


@_on("POST", "/apps/{app}/builds")
async def _create_build(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    import tempfile

    import trio

    from .routes import MAX_SOURCE_BYTES
    from .source_blob import fetch_blob

    app = await api.app_for(p["app"], user)
    who = ROOT_EMAIL if user is None else user.email
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        # An archive in the body (dynoctl deploy, git push over HTTPS): dynod's streamed route.
        query = {**request.query, "user": who}
        return await ApiRoutes.dispatch(api, replace(request, path=f"/apps/{_q(app['name'])}/builds", query=query))
    body = await _json(request)
    blob = body.get("source_blob")
    if not isinstance(blob, dict) or not isinstance(blob.get("url"), str):
        raise UserError("Field 'source_blob' must be {\"url\": URL of a tar.gz of the source, \"checksum\"?, "
                        "\"version\"?}.")
    version, checksum = blob.get("version"), blob.get("checksum")
    if not isinstance(version, str | None) or not isinstance(checksum, str | None):
        raise UserError("source_blob.version and source_blob.checksum must be strings.")
    settings = getattr(api.platform, "settings", None)
    refuse = []
    if settings is not None:
        import ipaddress

        refuse = [ipaddress.ip_network(settings.network.subnet), ipaddress.ip_network(settings.network.build_subnet)]
    allow_loopback = bool(settings is not None and settings.api.fetch_loopback)
    archive = tempfile.TemporaryFile(prefix="dynod-source-")
    try:
        await trio.to_thread.run_sync(lambda: fetch_blob(
            blob["url"], archive, limit=MAX_SOURCE_BYTES, checksum=checksum, refuse=refuse,
            allow_loopback=allow_loopback))
        lines: list[str] = []
        build = await api.platform.build_source(app["name"], archive, source="tarball", source_version=version,
                                                user=who, output=lines.append)
    finally:
        archive.close()
    if isinstance(build.get("release"), int):
        api.made_release(app, {"version": build["release"]}, user)
    shown = _build_json(api, app, build, api.new_output(app["name"], str(build.get("id"))))
    shown["source_blob"] = {"url": blob["url"], "checksum": checksum, "version": version,
                            "version_description": None}
    return 201, shown


@_on("GET", "/apps/{app}/builds")
async def _list_builds(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    return 200, [_build_json(api, app, b) for b in await api.platform.list_builds(app["name"])]


@_on("GET", "/apps/{app}/builds/{build}")
async def _get_build(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    for build in await api.platform.list_builds(app["name"]):
        if build.get("id") == p["build"]:
            return 200, _build_json(api, app, build, api.new_output(app["name"], p["build"]))
    raise NotFound(f"Couldn't find that build of {app['name']}.")


# --- SSH keys: each a user's (Heroku's /account/keys), and who may push where over SSH ----------------


def _key_json(key: Json, owner: User | None) -> Json:
    return {**key, "email": _person(owner)["email"]}


@_native
@_on("GET", "/account/keys")
@_on("GET", "/keys")
async def _list_keys(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    assert user is not None
    mine = api.accounts.keys_owned(user.id)
    return 200, [_key_json(k, user) for k in await api.platform.list_keys() if k["id"] in mine]


@_native
@_on("POST", "/account/keys")
@_on("POST", "/keys")
async def _add_key(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    assert user is not None
    body = await _json(request)
    key = _body_of(await api.native("POST", "/keys", {"public_key": body.get("public_key")}))
    api.accounts.own_key(key["id"], user.id)
    return 201, _key_json(key, user)


@_native
@_on("DELETE", "/account/keys/{key}")
@_on("DELETE", "/keys/{key}")
async def _remove_key(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    assert user is not None
    mine = api.accounts.keys_owned(user.id)
    for key in await api.platform.list_keys():
        if key["id"] in mine and p["key"] in (key["id"], key.get("fingerprint"), key.get("comment")):
            await api.platform.remove_key(key["id"])
            api.accounts.disown_key(key["id"])
            return (204, None) if wants_native(request) else (200, _key_json(key, user))
    raise NotFound(f"No key {p['key'][:80]!r} of yours: dynoctl keys lists them.")


@_socket
@_on("GET", "/apps/{app}/push-authorization")
async def _push_authorization(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    """The SSH pre-receive hook's question: may the key pushing now push to this app?"""
    if user is not None:
        raise _forbidden("Push authorization is asked by dynod's git hook, on the socket.")
    key_id = request.query.get("key", "")
    if key_id not in {k["id"] for k in await api.platform.list_keys()}:
        raise _forbidden("This SSH key is no longer authorized: add it again (dynoctl keys:add).")
    owner = api.accounts.key_owner(key_id)
    app = await api.find_app(p["app"])
    if owner is not None and not owner.admin and api.accounts.role_of(app_key(app), owner.id) is None:
        raise _forbidden(f"{owner.email}'s SSH key may not push to {app['name']}: ask its owner for access "
                         f"(dynoctl access:add {owner.email} -a {app['name']}).")
    return 200, {"allowed": True, "user": owner.email if owner is not None else key_id}


# --- slugs and buildpack installations ------------------------------------------------------------------


@_on("GET", "/apps/{app}/slugs/{slug}")
async def _get_slug(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    # Only a slug one of the app's releases names: a slug id must not reveal another app's code.
    releases = await api.platform.list_releases(app["name"])
    if p["slug"] not in {(r.get("slug") or {}).get("id") for r in releases}:
        raise NotFound(f"Couldn't find that slug of {app['name']}.")
    slugs = getattr(api.platform, "slugs", None)
    if slugs is None:
        raise NotFound("This dynod keeps no slugs.")
    info = slugs.get(p["slug"])
    stack = {"id": derived_id("stack", app.get("stack")), "name": app.get("stack")}
    return 200, {"id": info.id, "size": info.size, "process_types": info.process_types, "checksum":
                 f"SHA256:{info.id}", "commit": None, "commit_description": None, "buildpack_provided_description":
                 None, "stack": stack, "blob": None, "created_at": None, "updated_at": None}


def _installations(app: Json, urls: list[str]) -> list[Json]:
    key = app_key(app)
    return [{"ordinal": i, "buildpack": {"url": url, "name": url}, "app": {"id": key, "name": app["name"]}}
            for i, url in enumerate(urls)]


@_on("GET", "/apps/{app}/buildpack-installations")
async def _list_buildpacks(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    return 200, _installations(app, await api.platform.get_buildpacks(app["name"]))


@_on("PUT", "/apps/{app}/buildpack-installations")
async def _set_buildpacks(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    """The app's own buildpack list, apart from its config as on Heroku (not a release); dynod's own
    route checks each entry, and the next build uses the list ahead of BUILDPACK_URL."""
    app = await api.app_for(p["app"], user)
    answer = _body_of(await api.native("PUT", f"/apps/{_q(app['name'])}/buildpack-installations",
                                       await _json(request)))
    return 200, _installations(app, [b["buildpack"]["url"] for b in answer])


# --- domains and stacks: dynod's shapes plus Heroku's ids -----------------------------------------------


@_on("GET", "/apps/{app}/domains")
async def _list_domains(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    return 200, [_domain_json(app, d) for d in await api.platform.list_domains(app["name"])]


@_on("POST", "/apps/{app}/domains")
async def _add_domain(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    app = await api.app_for(p["app"], user)
    body = await _json(request)
    domain = _body_of(await api.native("POST", f"/apps/{_q(app['name'])}/domains",
                                       {"hostname": body.get("hostname")}))
    return 201, _domain_json(app, domain)


def _domain_json(app: Json, domain: Json) -> Json:
    key = app_key(app)
    # "domain": the field's old name, which clients still range by (heroku3 sends "domain ..;").
    return {**domain, "id": derived_id("domain", key, domain.get("hostname")), "domain": domain.get("hostname"),
            "app": {"id": key, "name": app["name"]},
            "cname": None if domain.get("kind") == "heroku" else domain.get("hostname"), "status": "succeeded",
            "acm_status": None, "acm_status_reason": None, "sni_endpoint": None,
            "created_at": app.get("created_at"), "updated_at": app.get("created_at")}


@_on("GET", "/stacks")
async def _stacks(api: PlatformApi, request: Request, p: dict[str, str], user: User | None) -> Any:
    return 200, [{**s, "id": derived_id("stack", s.get("name")), "state": "public", "created_at": None,
                  "updated_at": None} for s in await api.platform.list_stacks()]


__all__ = ["HeaderedJson", "PlatformApi", "RateLimiter", "check_accept", "credentials", "parse_quantity"]
