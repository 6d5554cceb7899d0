from pathlib import Path

import pytest

from dynod.errors import UserError
from dynod.router.routes import AppRoute, DynoRoute, RouteTable
from dynod.router.snapshots import CertsSnapshot, DomainCert, RoutesSnapshot, StoredCertsSnapshot
from dynod.router.wire import decode

TOKEN = "tok_EN-1"
APPS = {
    "myapp": {"domains": ["WWW.Example.test."], "policy": "p2c", "booting": True,
              "acme_challenges": {TOKEN: TOKEN + ".thumb"},
              "dynos": [{"name": "web.1", "addr": "198.18.0.5:5000"}, {"name": "web.2", "addr": "198.18.0.6:5001"}]},
    "asleep": {"sleeping": True, "crashed": True, "maintenance": True},
}


def test_routes_snapshot_decodes_to_typed_apps_with_defaults():
    snapshot = RoutesSnapshot.decode({"type": "routes", "apps": APPS})
    myapp, asleep = snapshot.apps
    assert myapp == AppRoute("myapp", ("www.example.test",), False, "p2c", True, False,
                             (DynoRoute("web.1", "198.18.0.5", 5000), DynoRoute("web.2", "198.18.0.6", 5001)),
                             {TOKEN.encode(): (TOKEN + ".thumb").encode()}, False)
    assert (asleep.policy, asleep.dynos, asleep.domains, asleep.sleeping, asleep.crashed) == \
        ("random", (), (), True, True)


def test_routes_snapshot_encode_then_decode_is_the_same_snapshot():
    snapshot = RoutesSnapshot.decode({"type": "routes", "apps": APPS})
    again = RoutesSnapshot.decode(decode(snapshot.encode()))
    assert again == snapshot
    assert RouteTable(again.apps, "localhost").lookup(b"www.example.test").name == "myapp"


def test_a_snapshot_built_by_hand_goes_on_the_wire_as_the_router_reads_it():
    app = AppRoute("a", ("a.test",), False, "random", False, False, (DynoRoute("web.1", "198.18.0.9", 80),))
    assert RoutesSnapshot.decode(decode(RoutesSnapshot((app,)).encode())).apps == (app,)


@pytest.mark.parametrize("message,words", [
    ({"type": "certs", "apps": {}}, "Expected a 'routes'"),
    ({"type": "routes"}, "apps must be an object"),
    ({"type": "routes", "apps": {"a": {"dynos": [{"name": "web.1", "addr": "198.18.0.1"}]}}}, "IPv4:PORT"),
    ({"type": "routes", "apps": {"a": {"acme_challenges": {"../x": "../x.y"}}}}, "acme_challenges"),
])
def test_bad_routes_snapshots_are_refused_with_one_line(message, words):
    with pytest.raises(UserError, match=words) as info:
        RoutesSnapshot.decode(message)
    assert "\n" not in str(info.value)


def test_certs_snapshot_round_trips_and_refuses_bad_shapes():
    snapshot = CertsSnapshot((DomainCert("a.test", "CERT", "KEY"),))
    assert CertsSnapshot.decode(decode(snapshot.encode())) == snapshot
    for certs in ("x", [{"domain": "a.test", "cert_pem": "c"}], [["a.test", "c", "k"]]):
        with pytest.raises(UserError, match="Bad certs message"):
            CertsSnapshot.decode({"type": "certs", "certs": certs})


def test_stored_certs_snapshot_round_trips_and_refuses_bad_shapes():
    snapshot = StoredCertsSnapshot((("a.test", Path("/state/certs/domain-1.pem")),))
    assert StoredCertsSnapshot.decode(decode(snapshot.encode())) == snapshot
    for certs in ({"a.test": "/x"}, [["a.test"]], [["a.test", 3]]):
        with pytest.raises(UserError, match="Bad stored certs"):
            StoredCertsSnapshot.decode({"type": "certs", "certs": certs})
