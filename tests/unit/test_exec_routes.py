"""The ps:exec route's input checks, against the fake platform, without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from dynod.api.routes import ApiRoutes, AttachResponse
from dynod.errors import UserError
from tests.unit.fake_platform import FakeAttachedDyno, FakePlatform
from tests.unit.test_api_routes import request

UPGRADE = {"connection": "Upgrade", "upgrade": "dynod-attach"}
PATH = "/apps/myapp/dynos/web.1/actions/exec"


class ExecPlatform(FakePlatform):
    async def exec_attached(self, app: str, dyno: str, command: str, tty: bool, rows: int, cols: int,
                            term: str | None = None) -> FakeAttachedDyno:
        self._call("exec_attached", app, dyno, command, tty, rows, cols, term)
        self._app(app)
        return FakeAttachedDyno(f"{dyno} (exec)", command or "echo bash", tty, rows, cols)


@pytest.fixture
async def platform() -> ExecPlatform:
    fake = ExecPlatform()
    await fake.create_app("myapp")
    fake.calls.clear()
    return fake


async def test_exec_passes_the_dyno_command_and_terminal_through(platform: ExecPlatform) -> None:
    body = {"command": "ps aux", "tty": True, "rows": 40, "cols": 120, "term": "xterm-256color"}
    response = await ApiRoutes(platform).dispatch(request("POST", PATH, body, headers=UPGRADE))
    assert isinstance(response, AttachResponse) and response.dyno.name == "web.1 (exec)"
    assert platform.calls == [("exec_attached", ("myapp", "web.1", "ps aux", True, 40, 120, "xterm-256color"))]
    await ApiRoutes(platform).dispatch(request("POST", PATH, {}, headers=UPGRADE))
    assert platform.calls[-1] == ("exec_attached", ("myapp", "web.1", "", False, 24, 80, None))  # bash, pipes


@pytest.mark.parametrize("body", [
    {"command": 5}, {"tty": "yes"}, {"rows": 0}, {"cols": 70000}, {"rows": True}, {"term": 7},
    {"term": "x" * 65}, {"term": "xterm\nEVIL=1"}, {"term": "A=B"}, {"command": "x" * 70000},
])
async def test_bad_fields_are_one_error_and_nothing_runs(platform: ExecPlatform, body: dict[str, Any]) -> None:
    with pytest.raises(UserError) as err:
        await ApiRoutes(platform).dispatch(request("POST", PATH, body, headers=UPGRADE))
    assert err.value.status == 422 and "\n" not in str(err.value)
    assert platform.calls == []


async def test_exec_without_the_upgrade_headers_is_400(platform: ExecPlatform) -> None:
    with pytest.raises(UserError, match="Upgrade") as err:
        await ApiRoutes(platform).dispatch(request("POST", PATH, {"command": "true"}))
    assert err.value.status == 400 and platform.calls == []
