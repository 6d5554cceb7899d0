"""The web health check: its settings (checked, stored per app), one probe's verdict, ejection."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynod.errors import NotFound, UserError
from dynod.manager.features import CATALOGUE, PREBOOT, feature, feature_json
from dynod.manager.health import HealthCheck, HealthChecks, passed, should_eject


def test_defaults_and_a_full_body() -> None:
    assert HealthCheck.from_json({}) == HealthCheck()
    check = HealthCheck.from_json({"path": "/health?x=1", "status": 204, "timeout": 0.5, "interval": 1,
                                   "failures": 2})
    assert check == HealthCheck("/health?x=1", 204, 0.5, 1.0, 2)
    assert HealthCheck.from_json(check.to_json()) == check


@pytest.mark.parametrize(("body", "words"), [
    ({"timeout": 0}, "timeout 0 is out of range: use 0.1 to 30"),
    ({"timeout": 31}, "out of range"),
    ({"interval": 0.1}, "interval 0.1 is out of range"),
    ({"failures": 0}, "failures 0 is out of range: use 1 to 10"),
    ({"failures": 1.5}, "failures must be a whole number"),
    ({"status": 99}, "status 99 is out of range: use 100 to 599"),
    ({"status": "200"}, "status must be a whole number"),
    ({"status": True}, "status must be a whole number"),
    ({"path": "health"}, "must start with /"),
    ({"path": "/a b"}, "no spaces"),
    ({"path": "/\r\nX: y"}, "no spaces"),
    ({"timeout": 5, "interval": 2}, "longer than its interval"),
    ({"paht": "/"}, "Unknown health check field 'paht'"),
    ([], "is an object"),
])
def test_bad_settings_are_one_clear_line(body: object, words: str) -> None:
    with pytest.raises(UserError) as caught:
        HealthCheck.from_json(body)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_probe_request_is_one_plain_get() -> None:
    assert HealthCheck(path="/health").request("198.18.0.2:5000") == (
        b"GET /health HTTP/1.1\r\nHost: 198.18.0.2:5000\r\nUser-Agent: dynod-health-check\r\n"
        b"Connection: close\r\n\r\n")


@pytest.mark.parametrize(("line", "ok"), [
    (b"HTTP/1.1 200 OK", True), (b"HTTP/1.0 200", True), (b"HTTP/1.1 500 Internal Server Error", False),
    (b"HTTP/1.1 2000 OK", False), (b"SSH-2.0-OpenSSH", False), (b"", False), (None, False),
])
def test_a_probe_passes_only_on_the_expected_status(line: bytes | None, ok: bool) -> None:
    assert passed(HealthCheck(status=200), line) is ok
    assert passed(HealthCheck(status=204), b"HTTP/1.1 204 No Content")


def test_ejection_after_the_set_number_of_failures_in_a_row() -> None:
    check = HealthCheck(failures=3)
    assert [should_eject(check, n) for n in range(5)] == [False, False, False, True, True]


def test_settings_are_a_file_per_app_and_go_with_it(tmp_path: Path) -> None:
    store = HealthChecks(tmp_path / "hc")
    assert store.get("shop") is None
    store.set("shop", HealthCheck(path="/up"))
    assert HealthChecks(tmp_path / "hc").get("shop") == HealthCheck(path="/up")  # read back from disk
    assert sorted(p.name for p in (tmp_path / "hc").iterdir()) == ["shop.json"]
    store.remove("shop")
    assert store.get("shop") is None and not (tmp_path / "hc" / "shop.json").exists()
    store.remove("shop")  # twice is fine
    with pytest.raises(NotFound):
        store.get("../etc/passwd")


def test_a_broken_settings_file_means_no_check(tmp_path: Path) -> None:
    (tmp_path / "shop.json").write_text("{not json")
    assert HealthChecks(tmp_path).get("shop") is None


def test_the_feature_catalogue_knows_preboot_and_refuses_others() -> None:
    assert feature("preboot") is CATALOGUE[PREBOOT]
    assert feature_json(feature("preboot"), True)["enabled"] is True
    with pytest.raises(NotFound) as caught:
        feature("prebot")
    assert "Couldn't find that feature ('prebot'); dynod has: preboot." == str(caught.value)
