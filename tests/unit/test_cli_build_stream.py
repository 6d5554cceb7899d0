"""dynoctl deploy's build stream (typed build events over the real API server): each line as it
comes, then the release, or one error line and exit 1."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from dynod.api.server import serve_api
from dynod.errors import UserError
from tests.unit.fake_platform import FakePlatform
from tests.unit.test_cli_commands import Cli

RECORD = {"id": "18a3c0f2e1b4d000-1f2e3d4c", "app": "myapp", "status": "succeeded", "source": "tarball",
          "release": 4, "error": None, "web_url": "http://myapp.localhost/", "buildpacks": ["python"]}


class BuildingPlatform(FakePlatform):
    """The fake platform plus a build that prints two lines and then ends as ``outcome`` says."""

    outcome: dict[str, Any] | UserError = RECORD

    async def build_source(self, app: str, archive: Any, *, source: str, source_version: str | None,
                           user: str | None, output: Callable[[str], None]) -> dict[str, Any]:
        output("-----> Python app detected")
        output("       Installing requirements")
        if isinstance(self.outcome, UserError):
            raise self.outcome
        return self.outcome


@pytest.fixture
async def building() -> AsyncIterator[tuple[BuildingPlatform, Cli]]:
    directory = Path(tempfile.mkdtemp(prefix="dynod-cli-build-", dir="/tmp"))
    platform = BuildingPlatform()
    await platform.create_app("myapp")
    try:
        async with trio.open_nursery() as nursery:
            path = await nursery.start(partial(serve_api, platform, directory / "api.sock",
                                               group="dynod-test-no-such-group"))
            yield platform, Cli(path)
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    (tmp_path / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    (tmp_path / "requirements.txt").write_text("")
    return tmp_path


async def test_a_build_prints_each_line_then_where_it_was_deployed(building: tuple[BuildingPlatform, Cli],
                                                                   source: Path) -> None:
    _, cli = building
    code, out, err = await cli("deploy", str(source))
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == ["-----> Python app detected", "       Installing requirements",
                                    "http://myapp.localhost/ deployed as v4"]


async def test_a_failed_build_is_one_line_with_its_reason(building: tuple[BuildingPlatform, Cli],
                                                          source: Path) -> None:
    platform, cli = building
    platform.outcome = {**RECORD, "status": "failed", "release": None, "error": "No buildpack detected"}
    code, out, err = await cli("deploy", str(source))
    assert code == 1 and out.splitlines()[-1] == "       Installing requirements"
    assert err == " !    Build failed: No buildpack detected.\n"
    platform.outcome = {**RECORD, "status": "failed", "release": None, "error": None}
    assert (await cli("deploy", str(source)))[2] == " !    Build failed: see the output above.\n"


async def test_a_build_dynod_could_not_run_is_its_error_line(building: tuple[BuildingPlatform, Cli],
                                                             source: Path) -> None:
    platform, cli = building
    platform.outcome = UserError("The build queue is full; try again in a minute.", status=503, code="busy")
    code, out, err = await cli("deploy", str(source))
    assert code == 1 and out.splitlines()[-1] == "       Installing requirements"
    assert err == " !    The build queue is full; try again in a minute.\n"
