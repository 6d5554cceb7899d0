import random

import pytest

from dynod.errors import UserError
from dynod.router.routes import AppRoute, DynoRoute, RouteTable, choose_dyno

SNAPSHOT = {
    "myapp": {"domains": ["www.example.test"], "dynos": [{"name": "web.1", "addr": "198.18.0.5:5000"},
                                                          {"name": "web.2", "addr": "198.18.0.6:5000"}]},
    "other": {"domains": ["myapp.localhost"], "maintenance": True, "policy": "p2c", "dynos": []},
}


def test_hosts_route_by_app_name_and_custom_domain_any_case_and_port():
    table = RouteTable.from_snapshot(SNAPSHOT, "localhost")
    for host in (b"myapp.localhost", b"MyApp.LocalHost:8080", b"www.example.test.", b"www.example.test:443"):
        assert table.lookup(host).name == "myapp"
    assert table.lookup(b"nope.localhost") is None
    assert table.lookup(b"[::1]:80") is None


def test_a_custom_domain_never_takes_another_apps_default_host():
    table = RouteTable.from_snapshot(SNAPSHOT, "localhost")
    assert table.lookup(b"myapp.localhost").name == "myapp"
    assert table.lookup(b"other.localhost").maintenance


@pytest.mark.parametrize("bad,words", [
    ([], "apps must be an object"),
    ({"a": {"dynos": [{"name": "web.1", "addr": "nowhere"}]}}, "IPv4:PORT"),
    ({"a": {"dynos": [{"name": "web.1", "addr": "198.18.0.1:0"}]}}, "no valid port"),
    ({"a": {"policy": "roundrobin"}}, "policy"),
    ({"a": {"maintenance": "yes"}}, "true or false"),
    ({"a": {"domains": "x.test"}}, "domains"),
])
def test_bad_snapshots_are_refused_with_one_line(bad, words):
    with pytest.raises(UserError) as info:
        RouteTable.from_snapshot(bad, "localhost")
    assert words in str(info.value) and "\n" not in str(info.value)


def _app(n, policy="random"):
    return AppRoute("a", (), False, policy, False, False,
                    tuple(DynoRoute(f"web.{i}", "198.18.0.1", 5000 + i) for i in range(1, n + 1)))


def test_random_choice_uses_every_dyno_and_skips_excluded_ones():
    app = _app(3)
    rng = random.Random(1)
    picks = {choose_dyno(app, {}, rng).name for _ in range(200)}
    assert picks == {"web.1", "web.2", "web.3"}
    assert {choose_dyno(app, {}, rng, app.dynos[:2]).name for _ in range(20)} == {"web.3"}
    assert choose_dyno(app, {}, rng, app.dynos) is None


def test_power_of_two_choices_avoids_the_busiest_dyno():
    app = _app(2, "p2c")
    in_flight = {("198.18.0.1", 5001): 5, ("198.18.0.1", 5002): 0}
    assert {choose_dyno(app, in_flight, random.Random(i)).name for i in range(50)} == {"web.2"}
