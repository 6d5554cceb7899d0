"""The scheduler's and autoscaler's API routes: input checked before anything is stored, the app
must exist, and the real Scheduler/Autoscaler behind them (no kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dynod.api.routes import ApiRoutes, JsonResponse
from dynod.autoscale import Autoscaler, AutoscaleStore, Damping, ResponseWindows
from dynod.errors import NotFound, UserError
from dynod.scheduler import Scheduler, SchedulerStore
from tests.unit.fake_platform import FakePlatform
from tests.unit.test_api_routes import request


@pytest.fixture
async def platform(tmp_path: Path) -> FakePlatform:
    fake = FakePlatform()
    await fake.create_app("myapp")

    async def start(app: str, command: str, size: str) -> dict[str, str]:
        return {"name": "scheduler.1"}

    async def formation(app: str) -> list[dict]:
        return []

    async def scale(app: str, type: str, quantity: int) -> object:
        return None

    fake.scheduler = Scheduler(SchedulerStore(tmp_path / "s.sqlite3"), start_dyno=start,  # type: ignore[attr-defined]
                               emit=lambda app, message: None)
    fake.autoscaler = Autoscaler(AutoscaleStore(tmp_path / "a.sqlite3"), windows=ResponseWindows(60),  # type: ignore[attr-defined]
                                 damping=Damping(), formation=formation, scale=scale, emit=lambda app, m: None,
                                 limit=100)
    return fake


async def test_jobs_are_added_listed_and_removed(platform: FakePlatform) -> None:
    routes = ApiRoutes(platform)
    job = {"schedule": "every hour at :15", "command": "bin/job", "size": "standard-2x"}
    added = await routes.dispatch(request("POST", "/apps/myapp/scheduler/jobs", job))
    assert isinstance(added, JsonResponse) and added.status == 201
    assert added.body["cron"] == "15 * * * *" and added.body["size"] == "standard-2X" and added.body["catch_up"]
    listed = await routes.dispatch(request("GET", "/apps/myapp/scheduler/jobs"))
    assert isinstance(listed, JsonResponse) and [j["id"] for j in listed.body] == [added.body["id"]]
    removed = await routes.dispatch(request("DELETE", f"/apps/myapp/scheduler/jobs/{added.body['id'][:6]}"))
    assert isinstance(removed, JsonResponse) and removed.body["id"] == added.body["id"]
    assert platform.scheduler.list_jobs("myapp") == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", [
    {"command": "x"}, {"schedule": "every 10 minutes"}, {"schedule": 10, "command": "x"},
    {"schedule": "every 10 minutes", "command": "x", "catch_up": "yes"},
    {"schedule": "every 10 minutes", "command": "x", "size": "huge-9X"},
    {"schedule": "every 10 minutes", "command": "x\x00y"},
    {"schedule": "every 10 minutes", "command": "x" * 9000},
    {"schedule": "every 11 minutes", "command": "x"},
])
async def test_bad_jobs_are_refused_before_anything_is_stored(platform: FakePlatform, body: dict) -> None:
    with pytest.raises(UserError) as err:
        await ApiRoutes(platform).dispatch(request("POST", "/apps/myapp/scheduler/jobs", body))
    assert err.value.status == 422 and "\n" not in str(err.value)
    assert platform.scheduler.list_jobs("myapp") == []  # type: ignore[attr-defined]


async def test_an_unknown_app_is_404(platform: FakePlatform) -> None:
    for method, path, body in (("GET", "/apps/nope/scheduler/jobs", None),
                               ("POST", "/apps/nope/scheduler/jobs", {"schedule": "hourly", "command": "x"}),
                               ("GET", "/apps/nope/autoscale", None),
                               ("PUT", "/apps/nope/autoscale/web", {"min": 1, "max": 2, "p95": "1s"})):
        with pytest.raises(NotFound):
            await ApiRoutes(platform).dispatch(request(method, path, body))


async def test_autoscaling_routes(platform: FakePlatform) -> None:
    routes = ApiRoutes(platform)
    for body in ({"min": 1, "max": 2}, {"min": "1", "max": 2, "p95": "1s"}, {"min": 3, "max": 2, "p95": "1s"},
                 {"min": 1, "max": 2, "p95": "soon"}, {"min": 1.5, "max": 2, "p95": "1s"}):
        with pytest.raises(UserError):
            await routes.dispatch(request("PUT", "/apps/myapp/autoscale/web", body))
    on = await routes.dispatch(request("PUT", "/apps/myapp/autoscale/web", {"min": 2, "max": 5, "p95": "750ms"}))
    assert isinstance(on, JsonResponse) and (on.body["min"], on.body["max"], on.body["p95_goal_ms"]) == (2, 5, 750)
    shown = await routes.dispatch(request("GET", "/apps/myapp/autoscale"))
    assert isinstance(shown, JsonResponse) and len(shown.body) == 1
    off = await routes.dispatch(request("DELETE", "/apps/myapp/autoscale/web"))
    assert isinstance(off, JsonResponse) and off.status == 204
    with pytest.raises(NotFound):
        await routes.dispatch(request("DELETE", "/apps/myapp/autoscale/web"))
    await trio.lowlevel.checkpoint()
