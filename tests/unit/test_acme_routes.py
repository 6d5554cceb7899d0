"""The route snapshot's ACME challenges (router side) and certs:auto's layout (dynoctl side)."""

import pytest

from dynod.cli.certs import acm_lines
from dynod.errors import UserError
from dynod.router.routes import RouteTable, challenge_answer

TOKEN = "abc_DEF-123"
ANSWER = f"{TOKEN}.thumb-print_9"


def _app(challenges):
    return RouteTable.from_snapshot({"a": {"domains": ["www.a.test"], "acme_challenges": challenges}},
                                    "localhost").apps["a"]


def test_a_token_is_answered_only_for_a_get_of_exactly_its_path():
    app = _app({TOKEN: ANSWER})
    assert challenge_answer(app, b"GET", f"/.well-known/acme-challenge/{TOKEN}".encode()) == ANSWER.encode()
    assert challenge_answer(app, b"HEAD", f"/.well-known/acme-challenge/{TOKEN}".encode()) is None
    assert challenge_answer(app, b"GET", b"/.well-known/acme-challenge/other") is None
    assert challenge_answer(app, b"GET", f"/.well-known/acme-challenge/{TOKEN}?x=1".encode()) is None
    assert challenge_answer(app, b"GET", f"/app/.well-known/acme-challenge/{TOKEN}".encode()) is None


def test_an_app_without_challenges_has_none():
    table = RouteTable.from_snapshot({"a": {"domains": []}}, "localhost")
    assert table.apps["a"].challenges == {}


@pytest.mark.parametrize("challenges", [
    ["not", "a", "map"],
    {"../../etc/passwd": "x"},
    {TOKEN: "not-the-token.thumb"},
    {TOKEN: f"{TOKEN}.<script>"},
    {TOKEN: 7},
    {"": "."},
])
def test_a_malformed_challenge_is_refused_with_one_line(challenges):
    with pytest.raises(UserError) as refused:
        _app(challenges)
    assert "acme_challenges" in str(refused.value)


STATUS = {"app": "myapp", "enabled": True, "directory_url": "https://ca.test/dir", "domains": [
    {"hostname": "www.a.test", "status": "issued", "in_progress": False, "reason": None,
     "expires_at": "2027-03-01T00:00:00Z", "next_attempt_at": "2027-01-30T00:00:00Z", "failures": 0,
     "updated_at": "2026-12-01T00:00:00Z"},
    {"hostname": "away.a.test", "status": "failing", "in_progress": False,
     "reason": "the challenge failed: connection refused", "expires_at": None,
     "next_attempt_at": "2026-12-01T00:10:00Z", "failures": 1, "updated_at": "2026-12-01T00:00:00Z"},
    {"hostname": "*.a.test", "status": "unsupported", "in_progress": False, "reason": "needs DNS-01",
     "expires_at": None, "next_attempt_at": None, "failures": 0, "updated_at": "2026-12-01T00:00:00Z"},
    {"hostname": "new.a.test", "status": "pending", "in_progress": True, "reason": None, "expires_at": None,
     "next_attempt_at": "2026-12-01T00:00:00Z", "failures": 0, "updated_at": "2026-12-01T00:00:00Z"},
]}


def test_certs_auto_shows_each_domain_and_why_the_failing_ones_fail():
    lines = acm_lines(STATUS)
    assert lines[0] == "=== Automatic Certificate Management is enabled on myapp"
    text = "\n".join(lines)
    row = next(line for line in lines if line.startswith("www.a.test"))
    assert "Cert issued" in row and "2027-03-01 00:00:00 UTC" in row
    assert next(line for line in lines if line.startswith("new.a.test")).split()[1:3] == ["In", "progress"]
    assert "away.a.test: the challenge failed: connection refused (next try 2026-12-01 00:10:00 UTC)" in text
    assert "*.a.test: needs DNS-01" in text and "Not supported" in text


def test_certs_auto_when_disabled_or_without_domains_says_what_to_do():
    assert "certs:auto:enable -a myapp" in "\n".join(acm_lines({**STATUS, "enabled": False}))
    assert "domains:add" in "\n".join(acm_lines({**STATUS, "domains": []}))
