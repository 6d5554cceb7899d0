"""The API's routing table: an HTTP request in, a ``PlatformService`` call, a response value out.

Nothing here touches a socket. The server (``server.py``) parses HTTP with h11 and hands each
request over as a ``Request``; a handler validates the input (a bad field is a ``UserError``
before the platform is ever called), calls the platform and returns one of the response values
below, which the server then writes. So every route tests against a fake platform without I/O.

Paths and shapes follow Heroku's Platform API; see docs/api.md for the full list.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import trio

from ..builds.events import BuildFailed, BuildOutput, build_finished
from ..errors import NotFound, UserError
from .attach import UPGRADE_TOKEN
from .service import AttachedDyno, Json, PlatformService

# A JSON request is a few fields; anything bigger is a mistake (slugs have their own route).
MAX_JSON_BODY = 1024 * 1024
# Deeper than any request shape dynod reads; the bound keeps a body of a million '[' from
# exhausting the parser's recursion (a 500 with a traceback, before).
MAX_JSON_DEPTH = 16
MAX_JSON_INT_DIGITS = 18  # integers fit the ledger's 64-bit columns
MAX_VERSION = 2**31 - 1  # release versions, rollbacks
# Heroku's default scale limit per process type (Dev Center, "Dyno scale limits").
MAX_QUANTITY = 100
MAX_COMMAND_BYTES = 8192  # a one-off dyno's command, as a Procfile line (procfile.MAX_COMMAND_BYTES)
# A one-off dyno's extra env is held to the same budget as the app's config vars.
MAX_ENV_BYTES = 32 * 1024
# Heroku's log stream keeps 1,500 lines per app and serves at most that many.
MAX_LOG_LINES = 1500
DEFAULT_LOG_LINES = 100
LOG_SOURCES = ("app", "dynod")

log = logging.getLogger("dynod.api")


class RequestBody(Protocol):
    """The request body as the server delivers it: whole (bounded) or streamed."""

    async def read(self, limit: int) -> bytes:
        """All of it; a UserError (413) past ``limit`` bytes."""
        ...

    def chunks(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string, still percent-encoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: RequestBody

    @property
    def wants_attach(self) -> bool:
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "upgrade" in connection and self.headers.get("upgrade", "").lower() == UPGRADE_TOKEN


@dataclass(frozen=True, slots=True)
class JsonResponse:
    status: int
    body: Any  # None: 204 No Content
    # Runs once the answer is on the wire: for requests (shutdown) that would cut it off.
    after: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True, slots=True)
class TextResponse:
    status: int
    text: str
    content_type: str = "text/plain; charset=utf-8"


Write = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamResponse:
    """A chunked body produced as it happens (log tails, stack builds).

    ``produce(write)`` writes every piece and returns at the end. With ``stop_when_client_leaves``
    the server cancels it as soon as the client hangs up, even if nothing is being written (a
    quiet tail would otherwise live forever); otherwise it runs to completion regardless.
    """

    produce: Callable[[Write], Awaitable[None]]
    content_type: str = "text/plain; charset=utf-8"
    stop_when_client_leaves: bool = True


@dataclass(frozen=True, slots=True)
class AttachResponse:
    """Switch the connection to attach frames (101) and pump between it and the dyno."""

    dyno: AttachedDyno


Response = JsonResponse | TextResponse | StreamResponse | AttachResponse
Handler = Callable[["ApiRoutes", Request, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    segments: tuple[str, ...]  # literal segments, or "{name}" captures
    handler: Handler


_ROUTES: list[_Route] = []


def _route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _ROUTES.append(_Route(method, tuple(pattern.strip("/").split("/")), handler))
        return handler

    return register


def match_route(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """Find the handler for a request; NotFound for no such path, 405 for a known path's wrong verb."""
    segments = tuple(unquote(s) for s in path.strip("/").split("/"))
    allowed: list[str] = []
    for route in _ROUTES:
        params = _match_segments(route.segments, segments)
        if params is None:
            continue
        if route.method == method:
            return route.handler, params
        allowed.append(route.method)
    if allowed:
        raise UserError(
            f"{method} is not allowed on {path}: use {' or '.join(sorted(set(allowed)))}.",
            status=405, code="method_not_allowed",
        )
    raise NotFound(f"No such API path {path}: see docs/api.md for the routes dynod serves.")


def _match_segments(pattern: tuple[str, ...], segments: tuple[str, ...]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


class ApiRoutes:
    """Dispatches requests to the platform. One instance serves every connection."""

    def __init__(self, platform: PlatformService) -> None:
        self.platform = platform

    async def dispatch(self, request: Request) -> Response:
        handler, params = match_route(request.method, request.path)
        return await handler(self, request, params)


# --- input checks: every one raises a UserError naming the field and what it should be -------------


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body.read(MAX_JSON_BODY)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_int=_json_int, parse_constant=_json_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"The request body is not valid JSON ({exc}): send a JSON object.",
                        status=400, code="bad_request") from None
    except RecursionError:
        raise _too_deep() from None
    if not isinstance(value, dict):
        raise UserError("The request body must be a JSON object.", status=400, code="bad_request")
    _check_depth(value)
    return value


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"the number {text[:24]}... has more than {MAX_JSON_INT_DIGITS} digits")
    return int(text)


def _json_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _too_deep() -> UserError:
    return UserError(f"The request body nests more than {MAX_JSON_DEPTH} levels deep: send a flat "
                     "JSON object.", status=400, code="bad_request")


def _check_depth(value: Any) -> None:
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        if isinstance(item, dict):
            pending.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            pending.extend((v, depth + 1) for v in item)


def _no_nul(text: str, what: str) -> str:
    # A NUL cannot pass through execve (argv, environ) and would crash-loop a dyno.
    if "\x00" in text:
        raise UserError(f"{what} contains a NUL character; remove it.")
    return text


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise UserError(f"Field {key!r} must be a string.")
    return value if value is None else _no_nul(value, f"Field {key!r}")


def _required_str(body: dict[str, Any], key: str) -> str:
    value = _optional_str(body, key)
    if not value:
        raise UserError(f"Field {key!r} is required: give a non-empty string.")
    return value


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise UserError(f"Field {key!r} must be true or false.")
    return value


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    # bool is an int subclass in Python; true as a row count is a client bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"Field {key!r} must be an integer from {low} to {high}.")
    return value


_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() also takes "٣" and "²"


def _whole_number(text: str) -> int | None:
    return int(text) if _DIGITS.fullmatch(text) else None


def _version(text: str) -> int:
    number = _whole_number(text[1:] if text[:1] in ("v", "V") else text)
    if number is None or not 1 <= number <= MAX_VERSION:
        raise UserError(f"Invalid release version {text[:40]!r}: use a version like v3 (or 'current').")
    return number


def _env(body: dict[str, Any]) -> dict[str, str]:
    env = body.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise UserError("Field 'env' must be an object of string names to string values.")
    for name, value in env.items():
        _no_nul(name, "An env name")
        _no_nul(value, f"Env var {name}")
    if sum(len(k.encode()) + len(v.encode()) for k, v in env.items()) > MAX_ENV_BYTES:
        raise UserError(f"Field 'env' is over {MAX_ENV_BYTES // 1024}kb; pass large data as a file.",
                        status=422, code="invalid_params")
    return env


def _command(body: dict[str, Any]) -> str:
    command = _required_str(body, "command")
    if len(command.encode()) > MAX_COMMAND_BYTES:
        raise UserError(f"The command is over {MAX_COMMAND_BYTES} bytes; put it in a script in the app.")
    return command


def _query_lines(request: Request) -> int:
    raw = request.query.get("lines", str(DEFAULT_LOG_LINES))
    if (lines := _whole_number(raw)) is None or not 1 <= lines <= MAX_LOG_LINES:
        raise UserError(f"lines must be a whole number from 1 to {MAX_LOG_LINES}, got {raw[:40]!r}.")
    return lines


def _query_source(request: Request) -> str | None:
    source = request.query.get("source") or None
    if source is not None and source not in LOG_SOURCES:
        raise UserError(f"Unknown log source {source!r}: use one of {', '.join(LOG_SOURCES)}.")
    return source


def _formation_updates(body: dict[str, Any]) -> list[Json]:
    updates = body.get("updates")
    if not isinstance(updates, list) or not updates:
        raise UserError("Field 'updates' must be a non-empty list of {\"type\", \"quantity\"?, \"size\"?}.")
    checked: list[Json] = []
    for update in updates:
        if not isinstance(update, dict):
            raise UserError("Each formation update must be an object with a 'type'.")
        item: Json = {"type": _required_str(update, "type")}
        if "quantity" in update:
            quantity = update["quantity"]
            if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 <= quantity <= MAX_QUANTITY:
                raise UserError(f"Quantity for {item['type']} must be a whole number from 0 to {MAX_QUANTITY}.")
            item["quantity"] = quantity
        if "size" in update:
            item["size"] = _required_str(update, "size")
        if len(item) == 1:
            raise UserError(f"Formation update for {item['type']} needs a 'quantity' or a 'size'.")
        checked.append(item)
    return checked


# --- apps -------------------------------------------------------------------------------------------


@_route("GET", "/apps")
async def _list_apps(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_apps())


@_route("POST", "/apps")
async def _create_app(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    return JsonResponse(201, await self.platform.create_app(_optional_str(body, "name") or None))


@_route("GET", "/apps/{app}")
async def _get_app(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.get_app(p["app"]))


@_route("PATCH", "/apps/{app}")
async def _patch_app(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    if "maintenance" not in body and "routing_policy" not in body:
        raise UserError("Nothing to change: send {\"maintenance\": true|false} or "
                        "{\"routing_policy\": \"random\"|\"p2c\"}.")
    result: Json = {}
    if "routing_policy" in body:
        if not isinstance(body["routing_policy"], str):
            raise UserError("routing_policy must be \"random\" or \"p2c\".")
        result = await self.platform.set_routing_policy(p["app"], body["routing_policy"])
    if "maintenance" in body:
        result = await self.platform.set_maintenance(p["app"], _bool(body, "maintenance", False))
    return JsonResponse(200, result)


@_route("DELETE", "/apps/{app}")
async def _destroy_app(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    await self.platform.destroy_app(p["app"])
    return JsonResponse(204, None)


# --- config vars ------------------------------------------------------------------------------------


@_route("GET", "/apps/{app}/config-vars")
async def _get_config(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.get_config(p["app"]))


@_route("PATCH", "/apps/{app}/config-vars")
async def _update_config(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    if not body:
        raise UserError("No config vars given: send {\"NAME\": \"value\"} to set, {\"NAME\": null} to unset.")
    for name, value in body.items():
        if value is not None and not isinstance(value, str):
            raise UserError(f"Config var {name} must be a string (or null to unset it).")
        _no_nul(name, "A config var name")
        if value is not None:
            _no_nul(value, f"Config var {name}")
    return JsonResponse(200, await self.platform.update_config(p["app"], body))


# --- buildpacks: Heroku's buildpack-installations shape, the app's list in build order ---------------


def buildpack_installations(urls: list[str]) -> list[Json]:
    return [{"ordinal": i, "buildpack": {"url": url, "name": url}} for i, url in enumerate(urls)]


@_route("GET", "/apps/{app}/buildpack-installations")
async def _get_buildpacks(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, buildpack_installations(await self.platform.get_buildpacks(p["app"])))


@_route("PUT", "/apps/{app}/buildpack-installations")
async def _set_buildpacks(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    updates = body.get("updates")
    if not isinstance(updates, list) or not all(
            isinstance(u, dict) and isinstance(u.get("buildpack"), str) and u["buildpack"].strip() for u in updates):
        raise UserError("Field 'updates' must be a list of {\"buildpack\": URL-or-name}, in build order.")
    urls = [_no_nul(u["buildpack"].strip(), "A buildpack") for u in updates]
    return JsonResponse(200, buildpack_installations(await self.platform.set_buildpacks(p["app"], urls)))


# --- slugs and releases -----------------------------------------------------------------------------


@_route("POST", "/apps/{app}/slugs")
async def _upload_slug(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(201, await self.platform.upload_slug(p["app"], request.body.chunks()))


@_route("GET", "/apps/{app}/releases")
async def _list_releases(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_releases(p["app"]))


@_route("POST", "/apps/{app}/releases")
async def _create_release(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    if "rollback" in body:
        if "slug" in body:
            raise UserError("Give either 'slug' (a new release) or 'rollback' (an old one), not both.")
        target = body["rollback"]
        if target is None:
            version = None
        elif isinstance(target, str):
            version = _version(target)
        elif isinstance(target, int) and not isinstance(target, bool) and 1 <= target <= MAX_VERSION:
            version = target
        else:
            raise UserError(
                "Field 'rollback' must be a version like 3 or \"v3\", or null for the previous one."
            )
        return JsonResponse(201, await self.platform.rollback(p["app"], version))
    slug = _required_str(body, "slug")
    description = _optional_str(body, "description")
    return JsonResponse(201, await self.platform.create_release(p["app"], slug, description))


@_route("GET", "/apps/{app}/releases/{version}")
async def _get_release(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    version = None if p["version"] == "current" else _version(p["version"])
    return JsonResponse(200, await self.platform.get_release(p["app"], version))


# --- formation and dynos ----------------------------------------------------------------------------


@_route("GET", "/apps/{app}/formation")
async def _get_formation(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.get_formation(p["app"]))


@_route("PATCH", "/apps/{app}/formation")
async def _update_formation(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    updates = _formation_updates(await _json_object(request))
    return JsonResponse(200, await self.platform.update_formation(p["app"], updates))


@_route("GET", "/apps/{app}/dynos")
async def _list_dynos(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_dynos(p["app"]))


@_route("POST", "/apps/{app}/dynos")
async def _run_dyno(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    command = _command(body)
    size = _optional_str(body, "size")
    env = _env(body)
    if not _bool(body, "attach", False):
        return JsonResponse(201, await self.platform.run_detached(p["app"], command, size, env))
    if not request.wants_attach:
        raise UserError(
            f"An attached run needs the headers 'Connection: Upgrade' and 'Upgrade: {UPGRADE_TOKEN}'.",
            status=400, code="bad_request",
        )
    dyno = await self.platform.run_attached(
        p["app"], command, size, env,
        tty=_bool(body, "tty", False),
        rows=_int(body, "rows", 24, 1, 0xFFFF),
        cols=_int(body, "cols", 80, 1, 0xFFFF),
    )
    return AttachResponse(dyno)


@_route("DELETE", "/apps/{app}/dynos")
async def _restart_all(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    await self.platform.restart_dynos(p["app"], None)
    return JsonResponse(202, {})


@_route("DELETE", "/apps/{app}/dynos/{target}")
async def _restart(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    await self.platform.restart_dynos(p["app"], p["target"])
    return JsonResponse(202, {})


@_route("POST", "/apps/{app}/dynos/{target}/actions/stop")
async def _stop(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    await self.platform.stop_dyno(p["app"], p["target"])
    return JsonResponse(202, {})


# --- ps:exec (docs/dynos.md): a command inside a running dyno, over the attach protocol -------------


@_route("POST", "/apps/{app}/dynos/{target}/actions/exec")
async def _exec(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    command = _optional_str(body, "command") or ""
    if len(command.encode()) > MAX_COMMAND_BYTES:
        raise UserError(f"The command is over {MAX_COMMAND_BYTES} bytes; put it in a script in the app.")
    tty = _bool(body, "tty", False)
    rows, cols = _int(body, "rows", 24, 1, 0xFFFF), _int(body, "cols", 80, 1, 0xFFFF)
    term = _optional_str(body, "term")
    if term is not None and (len(term) > 64 or not term.isprintable() or "=" in term):
        raise UserError("Field 'term' must be a terminal type such as xterm-256color.")
    if not request.wants_attach:
        raise UserError(f"ps:exec needs the headers 'Connection: Upgrade' and 'Upgrade: {UPGRADE_TOKEN}'.",
                        status=400, code="bad_request")
    return AttachResponse(await self.platform.exec_attached(
        p["app"], p["target"], command, tty, rows, cols, term))


# --- the dyno lifecycle: app features (preboot) and the web health check ----------------------------


@_route("GET", "/apps/{app}/features")
async def _list_features(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_features(p["app"]))


@_route("GET", "/apps/{app}/features/{feature}")
async def _get_feature(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.get_feature(p["app"], p["feature"]))


@_route("PATCH", "/apps/{app}/features/{feature}")
async def _set_feature(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    if not isinstance(body.get("enabled"), bool):
        raise UserError("Field 'enabled' is required: true to enable the feature, false to disable it.")
    return JsonResponse(200, await self.platform.set_feature(
        p["app"], p["feature"], body["enabled"]))


@_route("GET", "/apps/{app}/health-check")
async def _get_health_check(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.get_health_check(p["app"]))


@_route("PUT", "/apps/{app}/health-check")
async def _set_health_check(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    return JsonResponse(200, await self.platform.set_health_check(p["app"], body))


@_route("DELETE", "/apps/{app}/health-check")
async def _remove_health_check(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    await self.platform.remove_health_check(p["app"])
    return JsonResponse(204, None)


# --- logs and drains --------------------------------------------------------------------------------


@_route("GET", "/apps/{app}/logs")
async def _logs(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    app = p["app"]
    lines = _query_lines(request)
    ps = request.query.get("ps") or None
    source = _query_source(request)
    if request.query.get("tail", "").lower() not in ("true", "1"):
        text = "".join(_line(line) for line in await self.platform.log_lines(app, lines, ps, source))
        return TextResponse(200, text)
    # Once the 200 is sent an error can no longer be an error answer: check the app exists first.
    await self.platform.get_app(app)
    platform = self.platform

    async def produce(write: Write) -> None:
        lines_iter = platform.tail_logs(app, lines, ps, source)
        try:
            async for batch in lines_iter:
                await write("".join(_line(line) for line in batch).encode("utf-8", "replace"))
        finally:
            aclose = getattr(lines_iter, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()

    return StreamResponse(produce)


def _line(line: str) -> str:
    return line if line.endswith("\n") else line + "\n"


@_route("GET", "/apps/{app}/log-drains")
async def _list_drains(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_drains(p["app"]))


@_route("POST", "/apps/{app}/log-drains")
async def _add_drain(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    return JsonResponse(201, await self.platform.add_drain(p["app"], _required_str(body, "url")))


@_route("DELETE", "/apps/{app}/log-drains/{drain}")
async def _remove_drain(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    await self.platform.remove_drain(p["app"], p["drain"])
    return JsonResponse(204, None)


# --- domains and certificates -----------------------------------------------------------------------


@_route("GET", "/apps/{app}/domains")
async def _list_domains(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_domains(p["app"]))


@_route("POST", "/apps/{app}/domains")
async def _add_domain(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    return JsonResponse(201, await self.platform.add_domain(p["app"], _required_str(body, "hostname")))


@_route("DELETE", "/apps/{app}/domains/{hostname}")
async def _remove_domain(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    await self.platform.remove_domain(p["app"], p["hostname"])
    return JsonResponse(204, None)


@_route("GET", "/apps/{app}/sni-endpoints")
async def _list_certs(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_certs(p["app"]))


@_route("POST", "/apps/{app}/sni-endpoints")
async def _add_cert(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    cert = await self.platform.add_cert(
        p["app"], _required_str(body, "domain"),
        _required_str(body, "certificate_chain"), _required_str(body, "private_key"),
    )
    return JsonResponse(201, cert)


# --- automated certificate management (Heroku's ACM: certs:auto) ------------------------------------


@_route("GET", "/apps/{app}/acm")
async def _acm_status(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.acm_status(p["app"]))


@_route("POST", "/apps/{app}/acm")
async def _acm_enable(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.acm_enable(p["app"]))


@_route("DELETE", "/apps/{app}/acm")
async def _acm_disable(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.acm_disable(p["app"]))


@_route("PATCH", "/apps/{app}/acm/refresh")
async def _acm_refresh(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.acm_refresh(p["app"]))


# --- stacks and the daemon --------------------------------------------------------------------------


@_route("GET", "/stacks")
async def _list_stacks(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_stacks())


def _json_line(final: Json) -> bytes:
    return json.dumps(final).encode() + b"\n"


def _job_stream(job: Callable[[Callable[[bytes], None]], Awaitable[Json]], result_key: str, failed: str,
                content_type: str = "text/plain; charset=utf-8", cleanup: Callable[[], None] = lambda: None,
                encode_final: Callable[[Json], bytes] = _json_line) -> StreamResponse:
    """A long job's output line by line, then one JSON line: {result_key: result} or {"error"}
    (``encode_final`` writes it: a build's is its typed final event, dynod/builds/events.py).

    The job reports through a plain callback; an unbounded channel carries each piece to the task
    that owns the socket (the callback must never block). The job runs to its end even if the
    client leaves: a half-built stack or build is worse than one finished for nobody.
    """

    async def produce(write: Write) -> None:
        send, receive = trio.open_memory_channel[bytes](math.inf)
        final: Json = {}

        async def run() -> None:
            try:
                final[result_key] = await job(send.send_nowait)
            except UserError as exc:
                final["error"] = {"id": exc.code, "message": str(exc)}
            except Exception:
                log.exception("%s", failed)
                final["error"] = {"id": "internal_error", "message": f"{failed} inside dynod; see its log."}
            finally:
                cleanup()
                send.close()

        client_here = True

        async def write_while_client_here(data: bytes) -> None:
            nonlocal client_here
            if client_here:
                try:
                    await write(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    client_here = False

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            async for data in receive:
                await write_while_client_here(data)
        await write_while_client_here(encode_final(final))

    return StreamResponse(produce, content_type=content_type, stop_when_client_leaves=False)


@_route("POST", "/stacks/{name}/actions/build")
async def _build_stack(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    platform = self.platform
    name = p["name"]

    async def job(emit: Callable[[bytes], None]) -> Json:
        return await platform.build_stack(name, lambda line: emit(_line(line).encode("utf-8", "replace")))

    return _job_stream(job, "stack", f"Building stack {name} failed")


# --- builds and keys (git push, dynoctl deploy) ------------------------------------------------------

MAX_SOURCE_BYTES = 1 << 30  # a source archive larger than the largest slug cannot make one


@_route("POST", "/apps/{app}/builds")
async def _build(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    """Heroku's build-with-source-blob: a tar (git archive) or tar.gz body, output as ndjson."""
    app = p["app"]
    source = request.query.get("source", "tarball")
    if source not in ("git", "tarball"):
        raise UserError(f"Unknown build source {source!r}: use git or tarball.")
    await self.platform.get_app(app)  # refuse before the 200 goes out
    archive = tempfile.TemporaryFile(prefix="dynod-source-")
    size = 0
    try:
        async for chunk in request.body.chunks():
            size += len(chunk)
            if size > MAX_SOURCE_BYTES:
                raise UserError("The source archive is over 1 GB: add large files to .slugignore "
                                "or .gitignore.", status=413, code="too_large")
            await trio.to_thread.run_sync(archive.write, chunk)
        archive.seek(0)
    except BaseException:
        archive.close()
        raise
    platform = self.platform

    async def job(emit: Callable[[bytes], None]) -> Json:
        return await platform.build_source(
            app, archive, source=source, source_version=request.query.get("source_version"),
            user=request.query.get("user"),
            output=lambda line: emit(BuildOutput(line).encode()))

    return _job_stream(job, "build", f"The build of {app} failed", content_type="application/x-ndjson",
                       cleanup=archive.close, encode_final=_build_final)


def _build_final(final: Json) -> bytes:
    if "error" in final:
        return BuildFailed(id=final["error"]["id"], message=final["error"]["message"]).encode()
    return build_finished(final["build"]).encode()


@_route("GET", "/apps/{app}/builds")
async def _list_builds(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_builds(p["app"]))


@_route("GET", "/apps/{app}/builds/{id}/output")
async def _build_output(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    build_id = None if p["id"] == "latest" else p["id"]
    return TextResponse(200, await self.platform.build_output(p["app"], build_id))


@_route("GET", "/keys")
async def _list_keys(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_keys())


@_route("POST", "/keys")
async def _add_key(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    key = body.get("public_key")
    if not isinstance(key, str) or not key.strip():
        raise UserError('Give the key as {"public_key": "ssh-ed25519 AAAA... comment"}.')
    return JsonResponse(201, await self.platform.add_key(key))


@_route("DELETE", "/keys/{key}")
async def _remove_key(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    await self.platform.remove_key(p["key"])
    return JsonResponse(204, None)


@_route("GET", "/status")
async def _status(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.status())


@_route("POST", "/shutdown")
async def _shutdown(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    stop_dynos = _bool(body, "stop_dynos", False)
    platform = self.platform

    async def shut_down() -> None:
        await platform.shutdown(stop_dynos)

    return JsonResponse(202, {"stop_dynos": stop_dynos}, after=shut_down)


# --- metrics and the dashboard (docs/metrics.md, docs/dashboard.md) -------------------------------------

_PROCESS_TYPE = re.compile(r"[A-Za-z0-9_-]{1,63}")


def _metrics_of(routes: ApiRoutes) -> Any:
    metrics = getattr(routes.platform, "metrics", None)
    if metrics is None:
        raise NotFound("Metrics are not kept by this dynod.")
    return metrics


@_route("GET", "/apps/{app}/metrics")
async def _app_metrics(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    from ..metrics import parse_since

    metrics = _metrics_of(self)
    since = parse_since(request.query.get("since", "1h"))
    type_ = request.query.get("type", "web")
    if not _PROCESS_TYPE.fullmatch(type_):
        raise UserError(f"Invalid process type {type_[:40]!r}: use a Procfile name like web or worker.")
    await self.platform.get_app(p["app"])  # 404 for an app that is not there
    return JsonResponse(200, await metrics.series_in_thread(p["app"], type_, since))


@_route("GET", "/metrics")
async def _openmetrics(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    metrics = _metrics_of(self)
    if not getattr(self.platform, "prometheus", False):
        raise NotFound("The Prometheus endpoint is off: set [metrics] prometheus = true in dynod.toml.")
    return TextResponse(200, metrics.openmetrics(),
                        content_type="application/openmetrics-text; version=1.0.0; charset=utf-8")


@_route("GET", "/dashboard-url")
async def _dashboard_url(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    url = getattr(self.platform, "dashboard_url", None)
    if not url:
        raise NotFound("The dashboard has no TCP listener: set [dashboard] listen = \"127.0.0.1:5080\" in "
                       "dynod.toml and restart dynod.")
    return JsonResponse(200, {"url": url})


async def _asset(name: str) -> Response:
    from ..dashboard.assets import asset

    content_type, text = asset(name)
    return TextResponse(200, text, content_type=content_type)


@_route("GET", "/")
async def _dashboard_root(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return await _asset("index.html")


@_route("GET", "/dashboard")
async def _dashboard_index(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return await _asset("index.html")


@_route("GET", "/dashboard/{file}")
async def _dashboard_file(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return await _asset(p["file"] or "index.html")


@_route("GET", "/dashboard/vendor/uplot/{file}")
async def _dashboard_vendor(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return await _asset(f"vendor/uplot/{p['file']}")


# --- the scheduler and autoscaling (docs/scheduler.md, docs/autoscaling.md) --------------------------


def _part_of(routes: ApiRoutes, name: str) -> Any:
    part = getattr(routes.platform, name, None)
    if part is None:
        raise NotFound(f"This dynod runs no {name}.")
    return part


@_route("GET", "/apps/{app}/scheduler/jobs")
async def _list_jobs(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    scheduler = _part_of(self, "scheduler")
    await self.platform.get_app(p["app"])  # 404 for an app that is not there
    return JsonResponse(200, scheduler.list_jobs(p["app"]))


@_route("POST", "/apps/{app}/scheduler/jobs")
async def _add_job(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    scheduler = _part_of(self, "scheduler")
    body = await _json_object(request)
    schedule, command = _required_str(body, "schedule"), _command(body)
    size = _optional_str(body, "size")
    catch_up = _bool(body, "catch_up", True)
    await self.platform.get_app(p["app"])
    from ..model import DEFAULT_SIZE, dyno_size

    size_name = dyno_size(size).name if size else DEFAULT_SIZE
    return JsonResponse(201, scheduler.add_job(p["app"], schedule, command, size_name, catch_up))


@_route("DELETE", "/apps/{app}/scheduler/jobs/{job}")
async def _remove_job(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    scheduler = _part_of(self, "scheduler")
    await self.platform.get_app(p["app"])
    return JsonResponse(200, scheduler.remove_job(p["app"], p["job"]))


@_route("GET", "/apps/{app}/autoscale")
async def _show_autoscale(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    autoscaler = _part_of(self, "autoscaler")
    await self.platform.get_app(p["app"])
    return JsonResponse(200, autoscaler.show(p["app"]))


@_route("PUT", "/apps/{app}/autoscale/{type}")
async def _enable_autoscale(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    autoscaler = _part_of(self, "autoscaler")
    body = await _json_object(request)
    goal = _required_str(body, "p95")
    await self.platform.get_app(p["app"])
    return JsonResponse(200, autoscaler.enable(p["app"], p["type"], body.get("min"), body.get("max"), goal))


@_route("DELETE", "/apps/{app}/autoscale/{type}")
async def _disable_autoscale(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    autoscaler = _part_of(self, "autoscaler")
    await self.platform.get_app(p["app"])
    autoscaler.disable(p["app"], p["type"])
    return JsonResponse(204, None)


# --- add-ons (docs/addons.md): Heroku's /addons, /addon-attachments, /addon-services -----------------


def _attachment_name(body: dict[str, Any]) -> str | None:
    # Heroku's shape is {"attachment": {"name": "X"}}; {"as": "X"} is accepted too.
    attachment = body.get("attachment")
    if attachment is not None:
        if not isinstance(attachment, dict):
            raise UserError("Field 'attachment' must be an object like {\"name\": \"DATABASE\"}.")
        return _optional_str(attachment, "name") or None
    return _optional_str(body, "as") or None


@_route("GET", "/addons")
async def _list_all_addons(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_addons(None))


@_route("GET", "/addons/{addon}")
async def _get_addon_any(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.get_addon(p["addon"], None))


@_route("GET", "/apps/{app}/addons")
async def _list_addons(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_addons(p["app"]))


@_route("POST", "/apps/{app}/addons")
async def _create_addon(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    return JsonResponse(201, await self.platform.create_addon(
        p["app"], _required_str(body, "plan"), _attachment_name(body), _optional_str(body, "name") or None))


@_route("GET", "/apps/{app}/addons/{addon}")
async def _get_addon(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.get_addon(p["addon"], p["app"]))


@_route("PATCH", "/apps/{app}/addons/{addon}")
async def _change_addon_plan(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    plan = body.get("plan")
    plan = plan.get("name") if isinstance(plan, dict) else plan  # Heroku's {"plan": {"name": ...}} too
    if not isinstance(plan, str) or not plan:
        raise UserError("Send {\"plan\": \"SERVICE:PLAN\"}.")
    return JsonResponse(200, await self.platform.change_addon_plan(p["app"], p["addon"], _no_nul(plan, "plan")))


@_route("DELETE", "/apps/{app}/addons/{addon}")
async def _destroy_addon(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    force = _bool(body, "force", False) or request.query.get("force") in ("1", "true")
    return JsonResponse(200, await self.platform.destroy_addon(p["addon"], p["app"], force,
                                                               _bool(body, "final_backup", True)))


@_route("GET", "/addon-attachments")
async def _list_all_attachments(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_attachments(None))


@_route("GET", "/apps/{app}/addon-attachments")
async def _list_attachments(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_attachments(p["app"]))


@_route("POST", "/addon-attachments")
async def _attach_addon(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    addon, app = body.get("addon"), body.get("app")
    # Heroku sends {"addon": "name", "app": "name"} or the objects {"name": ...}.
    addon = addon.get("name") if isinstance(addon, dict) else addon
    app = app.get("name") if isinstance(app, dict) else app
    if not isinstance(addon, str) or not addon or not isinstance(app, str) or not app:
        raise UserError("Send {\"addon\": ADDON, \"app\": APP, \"name\": ATTACHMENT (optional)}.")
    return JsonResponse(201, await self.platform.attach_addon(
        _no_nul(addon, "addon"), _no_nul(app, "app"), _optional_str(body, "name") or None))


@_route("DELETE", "/apps/{app}/addon-attachments/{attachment}")
async def _detach_addon(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.detach_addon(p["app"], p["attachment"]))


@_route("GET", "/apps/{app}/pg-backups")
async def _pg_backups(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.pg_backups(p["app"]))


@_route("POST", "/apps/{app}/pg-backups")
async def _pg_backup_capture(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    return JsonResponse(201, await self.platform.pg_backup_capture(p["app"], _optional_str(body, "database") or None))


@_route("POST", "/apps/{app}/pg-backups/restores")
async def _pg_backup_restore(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    return JsonResponse(200, await self.platform.pg_backup_restore(
        p["app"], _optional_str(body, "backup") or None, _optional_str(body, "database") or None))


@_route("GET", "/apps/{app}/pg-backups/schedules")
async def _pg_backup_schedules(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.pg_backup_schedules(p["app"]))


@_route("PUT", "/apps/{app}/pg-backups/schedules")
async def _pg_backup_schedule(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    return JsonResponse(200, await self.platform.pg_backup_schedule(
        p["app"], _optional_str(body, "database") or None, _required_str(body, "at")))


@_route("DELETE", "/apps/{app}/pg-backups/schedules")
async def _pg_backup_unschedule(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    await self.platform.pg_backup_unschedule(p["app"], _optional_str(body, "database") or None)
    return JsonResponse(204, None)


@_route("GET", "/apps/{app}/pg-backups/{backup}/download")
async def _pg_backup_download(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    backup = None if p["backup"] == "latest" else p["backup"]
    _meta, chunks = await self.platform.pg_backup_download(p["app"], backup)

    async def produce(write: Write) -> None:
        async for chunk in chunks:
            await write(chunk)

    return StreamResponse(produce, content_type="application/octet-stream")


@_route("DELETE", "/apps/{app}/pg-backups/{backup}")
async def _pg_backup_delete(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    await self.platform.pg_backup_delete(p["app"], p["backup"])
    return JsonResponse(204, None)


@_route("POST", "/apps/{app}/pg-actions/{action}")
async def _pg_action(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    database = _optional_str(body, "database") or None
    if p["action"] == "credentials-rotate":
        return JsonResponse(200, await self.platform.pg_rotate(p["app"], database))
    if p["action"] == "reset":
        return JsonResponse(200, await self.platform.pg_reset(p["app"], database))
    if p["action"] == "ps":
        return JsonResponse(200, await self.platform.pg_ps(p["app"], database))
    if p["action"] == "kill":
        pid = _int(body, "pid", 0, 1, 2**31 - 1)
        return JsonResponse(200, await self.platform.pg_kill(p["app"], database, pid, _bool(body, "force", False)))
    raise NotFound(f"No pg action {p['action']!r}: use credentials-rotate, reset, ps or kill.")


@_route("POST", "/apps/{app}/redis-commands")
async def _redis_command(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    body = await _json_object(request)
    argv = body.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) or len(argv) > 1024:
        raise UserError("Field 'argv' must be a non-empty list of strings, like [\"GET\", \"key\"].")
    return JsonResponse(200, await self.platform.redis_command(
        p["app"], _optional_str(body, "addon") or None, list(argv)))


@_route("GET", "/addon-services")
async def _list_addon_services(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_addon_services())


@_route("GET", "/addon-services/{service}/plans")
async def _list_addon_plans(self: ApiRoutes, request: Request, p: dict[str, str]) -> Response:
    return JsonResponse(200, await self.platform.list_addon_plans(p["service"]))


__all__ = [
    "ApiRoutes", "AttachResponse", "JsonResponse", "Request", "RequestBody", "Response", "StreamResponse",
    "TextResponse", "match_route",
]
