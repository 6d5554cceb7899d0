"""Routing and input checks, against the fake platform, without sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from dynod.api.routes import (
    ApiRoutes,
    AttachResponse,
    JsonResponse,
    Request,
    StreamResponse,
    TextResponse,
    match_route,
)
from dynod.errors import UserError
from tests.unit.fake_platform import FakePlatform


class _Body:
    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    async def read(self, limit: int) -> bytes:
        if len(self.data) > limit:
            raise UserError("too large", status=413)
        return self.data

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.data


def request(method: str, path: str, body: object = None, *, query: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> Request:
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return Request(method, path, query or {}, headers or {}, _Body(data))


@pytest.fixture
async def platform() -> FakePlatform:
    fake = FakePlatform()
    await fake.create_app("myapp")
    fake.calls.clear()
    return fake


def test_match_route_captures_and_percent_decodes_segments() -> None:
    _, params = match_route("DELETE", "/apps/myapp/log-drains/syslog%3A%2F%2Flogs.example.com%3A514")
    assert params == {"app": "myapp", "drain": "syslog://logs.example.com:514"}
    _, params = match_route("GET", "/apps/myapp/releases/current")
    assert params == {"app": "myapp", "version": "current"}


def test_unknown_path_is_404_and_wrong_verb_is_405() -> None:
    with pytest.raises(UserError) as missing:
        match_route("GET", "/nope")
    assert missing.value.status == 404
    with pytest.raises(UserError) as verb:
        match_route("PUT", "/apps/myapp")
    assert verb.value.status == 405 and "DELETE or GET or PATCH" in str(verb.value)


async def test_create_app_passes_the_name(platform: FakePlatform) -> None:
    response = await ApiRoutes(platform).dispatch(request("POST", "/apps", {"name": "other"}))
    assert isinstance(response, JsonResponse) and response.status == 201
    assert response.body["name"] == "other"


async def test_bad_json_is_400_and_never_reaches_the_platform(platform: FakePlatform) -> None:
    with pytest.raises(UserError) as err:
        await ApiRoutes(platform).dispatch(request("PATCH", "/apps/myapp/config-vars", b"{nope"))
    assert err.value.status == 400 and err.value.code == "bad_request"
    with pytest.raises(UserError):
        await ApiRoutes(platform).dispatch(request("PATCH", "/apps/myapp/config-vars", [1, 2]))
    assert platform.calls == []


@pytest.mark.parametrize("updates", [
    None, [], [{"quantity": 1}], [{"type": "web", "quantity": -1}], [{"type": "web", "quantity": 1.5}],
    [{"type": "web", "quantity": True}], [{"type": "web"}], ["web=1"],
])
async def test_formation_updates_are_checked_before_the_platform(platform: FakePlatform, updates: object) -> None:
    with pytest.raises(UserError):
        await ApiRoutes(platform).dispatch(request("PATCH", "/apps/myapp/formation", {"updates": updates}))
    assert platform.calls == []


async def test_config_values_must_be_strings_or_null(platform: FakePlatform) -> None:
    with pytest.raises(UserError, match="must be a string"):
        await ApiRoutes(platform).dispatch(request("PATCH", "/apps/myapp/config-vars", {"A": 1}))
    response = await ApiRoutes(platform).dispatch(request("PATCH", "/apps/myapp/config-vars", {"A": "1", "B": None}))
    assert isinstance(response, JsonResponse) and response.body == {"A": "1"}


@pytest.mark.parametrize(("text", "version"), [("v3", 3), ("3", 3), ("current", None)])
async def test_release_versions(platform: FakePlatform, text: str, version: int | None) -> None:
    for value in ("x", "y", "z"):  # each a change: setting a var to its own value makes no release
        await platform.update_config("myapp", {"A": value})
    response = await ApiRoutes(platform).dispatch(request("GET", f"/apps/myapp/releases/{text}"))
    assert isinstance(response, JsonResponse) and response.body["version"] == 3
    assert platform.calls[-1] == ("get_release", ("myapp", version))


async def test_bad_release_version_is_refused(platform: FakePlatform) -> None:
    with pytest.raises(UserError, match="like v3"):
        await ApiRoutes(platform).dispatch(request("GET", "/apps/myapp/releases/vx"))


async def test_rollback_and_slug_are_exclusive(platform: FakePlatform) -> None:
    with pytest.raises(UserError, match="not both"):
        await ApiRoutes(platform).dispatch(request("POST", "/apps/myapp/releases", {"slug": "a", "rollback": 1}))
    with pytest.raises(UserError, match="'slug' is required"):
        await ApiRoutes(platform).dispatch(request("POST", "/apps/myapp/releases", {}))


async def test_attach_without_upgrade_headers_is_400(platform: FakePlatform) -> None:
    body = {"command": "echo hi", "attach": True}
    with pytest.raises(UserError) as err:
        await ApiRoutes(platform).dispatch(request("POST", "/apps/myapp/dynos", body))
    assert err.value.status == 400
    response = await ApiRoutes(platform).dispatch(request(
        "POST", "/apps/myapp/dynos", body, headers={"connection": "keep-alive, Upgrade", "upgrade": "dynod-attach"}))
    assert isinstance(response, AttachResponse) and response.dyno.name.startswith("run.")


async def test_run_checks_types_of_every_field(platform: FakePlatform) -> None:
    for body in ({"command": ""}, {"command": "x", "env": {"A": 1}}, {"command": "x", "attach": "yes"},
                 {"command": "x", "size": 2}):
        with pytest.raises(UserError):
            await ApiRoutes(platform).dispatch(request("POST", "/apps/myapp/dynos", body))
    assert platform.calls == []


async def test_logs_without_tail_are_plain_text(platform: FakePlatform) -> None:
    platform.emit_log("myapp", "one")
    platform.emit_log("myapp", "two")
    response = await ApiRoutes(platform).dispatch(request("GET", "/apps/myapp/logs", query={"lines": "1"}))
    assert isinstance(response, TextResponse) and response.text == "two\n"


@pytest.mark.parametrize("query", [{"lines": "0"}, {"lines": "1501"}, {"lines": "x"}, {"source": "kernel"}])
async def test_log_queries_are_checked(platform: FakePlatform, query: dict[str, str]) -> None:
    with pytest.raises(UserError):
        await ApiRoutes(platform).dispatch(request("GET", "/apps/myapp/logs", query=query))
    assert platform.calls == []


async def test_tail_of_a_missing_app_fails_before_streaming(platform: FakePlatform) -> None:
    with pytest.raises(UserError) as err:
        await ApiRoutes(platform).dispatch(request("GET", "/apps/ghost/logs", query={"tail": "true"}))
    assert err.value.status == 404
    response = await ApiRoutes(platform).dispatch(request("GET", "/apps/myapp/logs", query={"tail": "true"}))
    assert isinstance(response, StreamResponse) and response.stop_when_client_leaves


async def test_stack_build_streams_progress_then_one_json_line(platform: FakePlatform) -> None:
    response = await ApiRoutes(platform).dispatch(request("POST", "/stacks/debian-13/actions/build"))
    assert isinstance(response, StreamResponse) and not response.stop_when_client_leaves
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(data)

    await response.produce(write)
    assert written[:3] == [b"debootstrap: minbase\n", b"installing python3\n", b"sealing\n"]
    assert json.loads(written[-1])["stack"]["built"] is True


async def test_stack_build_failure_is_the_final_line(platform: FakePlatform) -> None:
    response = await ApiRoutes(platform).dispatch(request("POST", "/stacks/nope/actions/build"))
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(data)

    assert isinstance(response, StreamResponse)
    await response.produce(write)
    message = "No stack definition nope: see rootfs/ for the stacks there are."
    assert json.loads(written[-1]) == {"error": {"id": "not_found", "message": message}}


async def test_shutdown_runs_after_the_answer(platform: FakePlatform) -> None:
    response = await ApiRoutes(platform).dispatch(request("POST", "/shutdown", {"stop_dynos": True}))
    assert isinstance(response, JsonResponse) and response.status == 202
    assert platform.shutdowns == []
    assert response.after is not None
    await response.after()
    assert platform.shutdowns == [True]


# --- hostile input: every one a UserError in the API's shape, never a 500 ------------------------

@pytest.mark.parametrize("text", ["v9999999999999999999999", "v" + "9" * 5000, "v٣", "v²", "v0", "v-1",
                                  f"v{2**31}"])
async def test_absurd_release_versions_are_refused(platform: FakePlatform, text: str) -> None:
    with pytest.raises(UserError, match="like v3") as err:
        await ApiRoutes(platform).dispatch(request("GET", f"/apps/myapp/releases/{text}"))
    assert err.value.status == 422 and len(str(err.value)) < 200
    assert platform.calls == []


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                  json.dumps({"a": [[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]}).encode()])
async def test_deeply_nested_json_is_400(platform: FakePlatform, body: bytes) -> None:
    with pytest.raises(UserError, match="nests more than 16|must be a JSON object") as err:
        await ApiRoutes(platform).dispatch(request("PATCH", "/apps/myapp/config-vars", body))
    assert err.value.status == 400
    assert platform.calls == []


@pytest.mark.parametrize("body", [b'{"rollback": ' + b"9" * 30 + b"}", b'{"rollback": 1e999}',
                                  b'{"rollback": NaN}', b'{"rollback": 3000000000}'])
async def test_unbounded_numbers_are_refused(platform: FakePlatform, body: bytes) -> None:
    with pytest.raises(UserError):
        await ApiRoutes(platform).dispatch(request("POST", "/apps/myapp/releases", body))
    assert platform.calls == []


async def test_scale_beyond_the_limit_per_process_type_is_refused(platform: FakePlatform) -> None:
    with pytest.raises(UserError, match="from 0 to 100"):
        await ApiRoutes(platform).dispatch(request("PATCH", "/apps/myapp/formation",
                                                   {"updates": [{"type": "web", "quantity": 10**15}]}))
    assert platform.calls == []


@pytest.mark.parametrize("body", [{"A": "x\x00y"}, {"A\x00B": "x"}])
async def test_config_with_a_nul_is_refused(platform: FakePlatform, body: dict[str, str]) -> None:
    with pytest.raises(UserError, match="NUL"):
        await ApiRoutes(platform).dispatch(request("PATCH", "/apps/myapp/config-vars", body))
    assert platform.calls == []


@pytest.mark.parametrize("body", [{"command": "echo \x00"}, {"command": "x", "env": {"A": "\x00"}},
                                  {"command": "x" * 9000}, {"command": "x", "env": {"A": "x" * 40_000}}])
async def test_one_off_commands_and_env_are_bounded(platform: FakePlatform, body: dict[str, object]) -> None:
    with pytest.raises(UserError, match="NUL|over"):
        await ApiRoutes(platform).dispatch(request("POST", "/apps/myapp/dynos", body))
    assert platform.calls == []


@pytest.mark.parametrize("lines", ["9" * 5000, "١٢", "0", "1501"])
async def test_log_line_counts_are_bounded(platform: FakePlatform, lines: str) -> None:
    with pytest.raises(UserError, match="whole number from 1 to 1500"):
        await ApiRoutes(platform).dispatch(request("GET", "/apps/myapp/logs", query={"lines": lines}))
