"""The metrics routes, the dashboard's assets and its TCP listener's rules, the CLI's output: no sockets."""

from __future__ import annotations

import os
import stat

import pytest

from dynod.api.routes import ApiRoutes, JsonResponse, TextResponse
from dynod.cli.metrics import format_metrics, sparkline
from dynod.dashboard.assets import asset
from dynod.dashboard.listener import DashboardRoutes, load_token, parse_listen
from dynod.errors import NotFound, UserError
from dynod.metrics import Metrics
from tests.unit.fake_platform import FakePlatform
from tests.unit.test_api_routes import request


@pytest.fixture
def platform(tmp_path) -> FakePlatform:
    fake = FakePlatform()
    fake.metrics = Metrics(tmp_path / "metrics.sqlite3")  # type: ignore[attr-defined]
    return fake


async def _app(platform: FakePlatform) -> str:
    return (await platform.create_app("shop"))["name"]


async def test_app_metrics_route_serves_series_and_checks_its_input(platform: FakePlatform) -> None:
    app = await _app(platform)
    routes = ApiRoutes(platform)
    answer = await routes.dispatch(request("GET", f"/apps/{app}/metrics", query={"since": "2h"}))
    assert isinstance(answer, JsonResponse) and answer.status == 200
    assert answer.body["step"] == 60 and len(answer.body["points"]) >= 120
    with pytest.raises(UserError, match="use a span"):
        await routes.dispatch(request("GET", f"/apps/{app}/metrics", query={"since": "1y"}))
    with pytest.raises(UserError, match="Invalid process type"):
        await routes.dispatch(request("GET", f"/apps/{app}/metrics", query={"type": "../x"}))
    with pytest.raises(NotFound):
        await routes.dispatch(request("GET", "/apps/nope/metrics"))


async def test_prometheus_endpoint_is_off_by_default(platform: FakePlatform) -> None:
    routes = ApiRoutes(platform)
    with pytest.raises(NotFound, match="prometheus = true"):
        await routes.dispatch(request("GET", "/metrics"))
    platform.prometheus = True  # type: ignore[attr-defined]
    answer = await routes.dispatch(request("GET", "/metrics"))
    assert isinstance(answer, TextResponse) and answer.text.endswith("# EOF\n")
    assert answer.content_type.startswith("application/openmetrics-text")


def test_assets_are_the_shipped_files_only() -> None:
    content_type, text = asset("index.html")
    assert content_type.startswith("text/html") and "<html" in text
    assert "uPlot" in asset("vendor/uplot/uPlot.iife.min.js")[1]
    for bad in ("../__init__.py", "vendor/../../listener.py", "/etc/passwd", "listener.py", "nothere.js",
                "vendor/uplot/LICENSE"):
        with pytest.raises(NotFound):
            asset(bad)


def test_page_makes_no_external_requests() -> None:
    import re

    for name in ("index.html", "app.js", "style.css"):
        text = asset(name)[1]
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), name
        assert "fetch(\"http" not in text and "fetch('http" not in text
    assert "default-src 'self'" in asset("index.html")[1]


@pytest.mark.parametrize("text", ["0.0.0.0:5080", "192.0.2.1:80", "localhost:5080", "127.0.0.1", "127.0.0.1:0",
                                  "127.0.0.1:70000", "[::]:5080", "garbage"])
def test_dashboard_listens_on_loopback_only(text: str) -> None:
    with pytest.raises(UserError, match=r"\[dashboard\] listen"):
        parse_listen(text)


def test_dashboard_listen_parses() -> None:
    assert parse_listen("127.0.0.1:5080") == ("127.0.0.1", 5080)
    assert parse_listen("[::1]:5080") == ("::1", 5080)


def test_token_file_is_private_and_kept(tmp_path) -> None:
    token = load_token(tmp_path)
    assert len(token) >= 32 and load_token(tmp_path) == token
    assert stat.S_IMODE(os.stat(tmp_path / "dashboard.token").st_mode) == 0o600


async def test_tcp_routes_need_the_token_and_their_own_host(platform: FakePlatform) -> None:
    await _app(platform)
    routes = DashboardRoutes(ApiRoutes(platform), "t" * 40, "127.0.0.1", 5080)
    host = {"host": "127.0.0.1:5080"}
    no_token = await routes.dispatch(request("GET", "/apps", headers=host))
    assert isinstance(no_token, JsonResponse) and no_token.status == 401
    wrong = await routes.dispatch(request("GET", "/apps", headers={**host, "authorization": "Bearer " + "x" * 40}))
    assert isinstance(wrong, JsonResponse) and wrong.status == 401
    ok = await routes.dispatch(request("GET", "/apps", headers={**host, "authorization": "Bearer " + "t" * 40}))
    assert isinstance(ok, JsonResponse) and ok.status == 200 and ok.body
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 sends its own Host
    rebound = await routes.dispatch(request("GET", "/apps", headers={"host": "evil.example:5080",
                                                                     "authorization": "Bearer " + "t" * 40}))
    assert isinstance(rebound, JsonResponse) and rebound.status == 421
    page = await routes.dispatch(request("GET", "/", headers=host))
    assert isinstance(page, TextResponse) and page.status == 200
    authorized = {**host, "authorization": "Bearer " + "t" * 40}
    shutdown = await routes.dispatch(request("POST", "/shutdown", headers=authorized))
    assert isinstance(shutdown, JsonResponse) and shutdown.status == 403


def test_sparkline_scales_and_shows_gaps() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([None, 1.0, None]) == " █ "
    assert sparkline([0.0, 0.0]) == "▁▁"
    assert len(sparkline([1.0] * 1440)) <= 60


def test_metrics_table_has_every_figure(tmp_path) -> None:
    from dynod.router.logline import access_line

    metrics = Metrics(tmp_path / "m.sqlite3")
    for ms in (10, 20, 30):
        metrics.observe_messages("a", "dynod", "router", [access_line(
            method="GET", path="/", host="h", request_id="r", fwd="f", dyno="web.1", connect=0.0,
            service=ms / 1000, status=200, nbytes=1, protocol="http")])
    text = "\n".join(format_metrics(metrics.series("a", "web", 3600), "1h"))
    for word in ("Response p50", "Response p99", "Throughput", "3 requests", "Errors", "Memory RSS",
                 "Dyno load", "Restarts", "Crashes", "±4.8%"):
        assert word in text, word


async def test_dashboard_url_says_how_to_turn_the_listener_on(platform: FakePlatform) -> None:
    routes = ApiRoutes(platform)
    with pytest.raises(NotFound, match=r"\[dashboard\] listen"):
        await routes.dispatch(request("GET", "/dashboard-url"))
    platform.dashboard_url = "http://127.0.0.1:5080/#token=abc"  # type: ignore[attr-defined]
    answer = await routes.dispatch(request("GET", "/dashboard-url"))
    assert isinstance(answer, JsonResponse) and answer.body == {"url": "http://127.0.0.1:5080/#token=abc"}


async def test_a_dashboard_port_in_use_is_one_line(platform: FakePlatform, tmp_path) -> None:
    import re
    import socket

    import trio

    from dynod.daemon import Daemon, _first_user_error
    from dynod.settings import DashboardSettings, Settings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = Daemon(Settings(state_dir=tmp_path, dashboard=DashboardSettings(listen=f"127.0.0.1:{port}")))
        with pytest.raises(BaseExceptionGroup) as caught:  # as in the daemon's nursery
            async with trio.open_nursery() as nursery:
                await daemon._serve_dashboard(platform, nursery)
        error = _first_user_error(caught.value)  # what `dynod` prints, on one line
        assert error is not None and re.fullmatch(rf"\[dashboard\] listen 127.0.0.1:{port}: .*in use; .*", str(error))
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    daemon = Daemon(Settings(state_dir=tmp_path, dashboard=DashboardSettings(listen=f"127.0.0.1:{port}")))
    async with trio.open_nursery() as nursery:
        await daemon._serve_dashboard(platform, nursery)
        assert platform.dashboard_url == f"http://127.0.0.1:{port}/#token={load_token(tmp_path)}"  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()
