"""Platform.route_table: the routes snapshot dynod pushes, built typed (AppRoute entries), is the
one the router read from the dict dynod used to send (its wire form is unchanged)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynod.ledger import open_ledger
from dynod.manager.web_routes import WebRoutes
from dynod.model import DynoRecord, DynoState
from dynod.platform import Platform
from dynod.router.snapshots import RoutesSnapshot
from dynod.router.wire import decode
from dynod.settings import Settings


def _up(app: str, name: str, ip: str, port: int) -> DynoRecord:
    return DynoRecord(id=f"{app}.{name}.x", app=app, name=name, type="web", release=1, size="basic",
                      command="web", state=DynoState.UP, pid=100, ip=ip, port=port, created_at=0.0,
                      state_changed_at=0.0)


class Manager:
    """What route_table asks the dyno manager."""

    routes = {"shop": WebRoutes((_up("shop", "web.1", "198.18.0.5", 5000), _up("shop", "web.2", "198.18.0.6", 5000)),
                                booting=False, crashed=False),
              "blog": WebRoutes((), booting=True, crashed=False),
              "gone": WebRoutes((), booting=False, crashed=True)}

    def web_routes(self, app: str) -> WebRoutes:
        return self.routes[app]

    def is_sleeping(self, app: str) -> bool:
        return app == "blog"


class Acm:
    def challenges(self, app: str) -> dict[str, str]:
        return {"tok-EN_1": "tok-EN_1.thumb-print"} if app == "shop" else {}


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    settings = Settings(state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    settings.state_dir.mkdir()
    ledger = open_ledger(f"sqlite:///{settings.state_dir / 'dynod.sqlite3'}")
    for app in ("shop", "blog", "gone"):
        ledger.create_app(app)
    ledger.add_domain("shop", "www.shop.test")
    ledger.set_maintenance("gone", True)
    ledger.set_routing_policy("blog", "p2c")
    platform = Platform(settings, ledger=ledger, manager=Manager(), logs=None,  # type: ignore[arg-type]
                        slugs=None, stacks=None, routes_changed=lambda: None, request_shutdown=lambda stop: None)
    platform.acm = Acm()
    try:
        yield platform
    finally:
        ledger.close()


def _as_dynod_sent_it(platform: Platform) -> dict[str, Any]:
    """The dict the producer built before it was typed, from the same ledger and manager."""
    apps: dict[str, Any] = {}
    for app in platform.ledger.list_apps():
        web = platform.manager.web_routes(app.name)
        apps[app.name] = {
            "domains": [f"{app.name}.localhost", *platform.ledger.list_domains(app.name)],
            "maintenance": app.maintenance, "policy": app.routing_policy,
            "acme_challenges": platform.acm.challenges(app.name), "booting": web.booting,
            "sleeping": platform.manager.is_sleeping(app.name), "crashed": web.crashed,
            "dynos": [{"name": d.name, "addr": f"{d.ip}:{d.port}"} for d in web.dynos],
        }
    return apps


def test_the_typed_snapshot_is_the_one_the_router_read_from_the_dict(platform: Platform) -> None:
    snapshot = platform.route_table()
    assert isinstance(snapshot, RoutesSnapshot)
    assert snapshot == RoutesSnapshot.decode({"type": "routes", "apps": _as_dynod_sent_it(platform)})
    assert RoutesSnapshot.decode(decode(snapshot.encode())) == snapshot  # and the router reads it back so
    shop, blog, gone = sorted(snapshot.apps, key=lambda a: ["shop", "blog", "gone"].index(a.name))
    assert shop.domains == ("shop.localhost", "www.shop.test")
    assert [(d.name, d.addr) for d in shop.dynos] == [("web.1", ("198.18.0.5", 5000)), ("web.2", ("198.18.0.6", 5000))]
    assert shop.challenges == {b"tok-EN_1": b"tok-EN_1.thumb-print"}
    assert (blog.booting, blog.sleeping, blog.policy) == (True, True, "p2c")
    assert (gone.crashed, gone.maintenance, gone.dynos) == (True, True, ())
