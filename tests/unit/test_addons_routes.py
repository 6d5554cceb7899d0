"""The add-on routes' input checks and the calls they make, against a recording platform."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dynod.api.routes import ApiRoutes, JsonResponse, Request, StreamResponse, match_route
from dynod.errors import UserError


class _Body:
    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    async def read(self, limit: int) -> bytes:
        return self.data

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.data


def request(method: str, path: str, body: object = None) -> Request:
    data = b"" if body is None else json.dumps(body).encode()
    return Request(method, path, {}, {}, _Body(data))


class Recorder:
    """Every platform call, with its arguments; answers a small dict."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any) -> Any:
            self.calls.append((name, args))
            if name == "pg_backup_download":
                async def chunks() -> AsyncIterator[bytes]:
                    yield b"PGDMP"
                return {}, chunks()
            return {"ok": name}
        return call


async def dispatch(method: str, path: str, body: object = None) -> tuple[Recorder, Any]:
    platform = Recorder()
    answer = await ApiRoutes(platform).dispatch(request(method, path, body))  # type: ignore[arg-type]
    return platform, answer


async def test_create_takes_herokus_attachment_shape_and_the_short_one() -> None:
    platform, answer = await dispatch("POST", "/apps/shop/addons", {"plan": "heroku-redis:mini",
                                                                   "attachment": {"name": "CACHE"}})
    assert isinstance(answer, JsonResponse) and answer.status == 201
    assert platform.calls == [("create_addon", ("shop", "heroku-redis:mini", "CACHE", None))]
    platform, _ = await dispatch("POST", "/apps/shop/addons", {"plan": "heroku-redis", "as": "CACHE", "name": "r-1"})
    assert platform.calls == [("create_addon", ("shop", "heroku-redis", "CACHE", "r-1"))]


@pytest.mark.parametrize(("method", "path", "body", "message"), [
    ("POST", "/apps/shop/addons", {}, "'plan' is required"),
    ("POST", "/apps/shop/addons", {"plan": 3}, "must be a string"),
    ("POST", "/apps/shop/addons", {"plan": "heroku-redis", "attachment": "CACHE"}, "must be an object"),
    ("POST", "/addon-attachments", {"addon": "r-1"}, "Send {\"addon\""),
    ("PATCH", "/apps/shop/addons/r-1", {"plan": ["x"]}, "SERVICE:PLAN"),
    ("DELETE", "/apps/shop/addons/r-1", {"force": "yes"}, "true or false"),
    ("PUT", "/apps/shop/pg-backups/schedules", {}, "'at' is required"),
    ("POST", "/apps/shop/pg-actions/kill", {"pid": "12"}, "integer"),
    ("POST", "/apps/shop/pg-actions/drop-everything", {}, "No pg action"),
    ("POST", "/apps/shop/redis-commands", {"argv": []}, "non-empty list"),
    ("POST", "/apps/shop/redis-commands", {"argv": ["GET", 1]}, "non-empty list"),
])
async def test_bad_input_never_reaches_the_platform(method: str, path: str, body: object, message: str) -> None:
    platform = Recorder()
    with pytest.raises(UserError, match=message) as refused:
        await ApiRoutes(platform).dispatch(request(method, path, body))  # type: ignore[arg-type]
    assert refused.value.status < 500 and platform.calls == []


async def test_the_attach_route_takes_names_or_heroku_objects() -> None:
    platform, answer = await dispatch("POST", "/addon-attachments", {"addon": {"name": "r-1"}, "app": {"name": "b"},
                                                                    "name": "SHARED"})
    assert answer.status == 201 and platform.calls == [("attach_addon", ("r-1", "b", "SHARED"))]


async def test_backup_routes_call_the_platform_with_what_was_named() -> None:
    platform, _ = await dispatch("POST", "/apps/shop/pg-backups/restores", {"backup": "b002", "database": "DATABASE"})
    assert platform.calls == [("pg_backup_restore", ("shop", "b002", "DATABASE"))]
    platform, answer = await dispatch("GET", "/apps/shop/pg-backups/latest/download")
    assert isinstance(answer, StreamResponse) and platform.calls == [("pg_backup_download", ("shop", None))]
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(data)

    await answer.produce(write)
    assert written == [b"PGDMP"]
    # "schedules" is a route of its own, never a backup id.
    handler, params = match_route("DELETE", "/apps/shop/pg-backups/schedules")
    assert "backup" not in params
    platform, _ = await dispatch("DELETE", "/apps/shop/addons/r-1", {"force": True, "final_backup": False})
    assert platform.calls == [("destroy_addon", ("r-1", "shop", True, False))]
