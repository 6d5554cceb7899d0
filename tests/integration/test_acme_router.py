"""The router answers ACME HTTP-01 challenges from its route snapshot, for that app's hosts only."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from dynod.router.testing import Dyno, RouterProcess

pytestmark = pytest.mark.integration

TOKEN = "tok_en-123"
ANSWER = f"{TOKEN}.thumbprint_x"


@pytest.fixture
def router() -> Iterator[RouterProcess]:
    r = RouterProcess(workers=1)
    try:
        yield r
    finally:
        r.stop()


def _get(r: RouterProcess, host: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=10)
    try:
        conn.request(method, path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_pending_token_is_answered_before_routing_even_without_dynos_or_in_maintenance(
        router: RouterProcess) -> None:
    router.routes({"a": {"domains": ["www.a.test"], "maintenance": True, "acme_challenges": {TOKEN: ANSWER}},
                   "b": {"domains": ["www.b.test"]}})
    assert _get(router, "www.a.test", f"/.well-known/acme-challenge/{TOKEN}") == (200, ANSWER.encode())
    assert _get(router, "WWW.A.TEST.", f"/.well-known/acme-challenge/{TOKEN}") == (200, ANSWER.encode())
    # Another app's host, an unknown token, another method, another path: routed as usual.
    assert _get(router, "www.b.test", f"/.well-known/acme-challenge/{TOKEN}")[0] == 503  # H14: no dynos
    assert _get(router, "www.a.test", "/.well-known/acme-challenge/other")[0] == 503  # maintenance (H80)
    assert _get(router, "www.a.test", f"/.well-known/acme-challenge/{TOKEN}", "POST")[0] == 503
    assert _get(router, "www.a.test", f"/x/.well-known/acme-challenge/{TOKEN}")[0] == 503
    lines = [line for app, line in router.logs(timeout=1.0) if app == "a"]
    assert any('path="/.well-known/acme-challenge/' in line and "status=200" in line for line in lines), lines


def test_a_withdrawn_token_goes_back_to_the_app(router: RouterProcess) -> None:
    dyno = Dyno("web.1")
    try:
        route = {"domains": ["www.a.test"], "dynos": [dyno.route()]}
        router.routes({"a": {**route, "acme_challenges": {TOKEN: ANSWER}}})
        assert _get(router, "www.a.test", f"/.well-known/acme-challenge/{TOKEN}") == (200, ANSWER.encode())
        assert dyno.hits == 0  # answered by the router itself
        router.routes({"a": route})
        assert _get(router, "www.a.test", f"/.well-known/acme-challenge/{TOKEN}") == (
            200, f"web.1 GET /.well-known/acme-challenge/{TOKEN}".encode())
    finally:
        dyno.close()


def test_a_malformed_challenge_in_the_snapshot_is_refused_and_the_routes_kept(router: RouterProcess) -> None:
    router.routes({"a": {"domains": ["www.a.test"], "acme_challenges": {TOKEN: ANSWER}}})
    router.routes({"a": {"domains": ["www.a.test"], "acme_challenges": {"../etc": "x"}}})
    errors = [m for m in router.messages(timeout=1.0) if m["type"] == "error"]
    assert errors and "acme_challenges" in errors[0]["message"]
    assert _get(router, "www.a.test", f"/.well-known/acme-challenge/{TOKEN}") == (200, ANSWER.encode())
