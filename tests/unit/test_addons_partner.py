"""[[addons.partners]] settings: a bad entry is one line saying what to fix; config vars lose the
service's prefix so that each attachment can prefix them."""

from __future__ import annotations

import pytest

from dynod.addons.partner import PartnerProvider, partner_services
from dynod.errors import UserError

GOOD = {"name": "mycache", "base_url": "https://cache.example/", "username": "mycache", "password": "pw",
        "plans": ["test", "basic"]}


def test_a_good_entry_makes_a_service_with_its_plans_and_prefix() -> None:
    [partner] = partner_services([GOOD])
    assert partner.base_url == "https://cache.example" and partner.service.attachment == "MYCACHE"
    assert [p.name for p in partner.service.plans] == ["test", "basic"] and partner.service.default_plan == "test"


@pytest.mark.parametrize(("change", "message"), [
    ({"base_url": "http://cache.example"}, "https://"),
    ({"name": "heroku-redis"}, "name must be"),
    ({"plans": []}, "plans must be"),
    ({"password": ""}, "password"),
    ({"config_vars_prefix": "lower"}, "config_vars_prefix"),
    ({"colour": "blue"}, "unknown setting 'colour'"),
])
def test_bad_entries_are_refused(change: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(UserError, match=message):
        partner_services([{**GOOD, **change}])


def test_config_vars_lose_the_services_prefix() -> None:
    provider = PartnerProvider(partner_services([GOOD])[0])
    assert provider._config({"config": {"MYCACHE_URL": "u", "MYCACHE_TOKEN": "t", "OTHER": "o"}}) == {
        "URL": "u", "TOKEN": "t", "OTHER": "o"}
    with pytest.raises(UserError, match="not a map of strings"):
        provider._config({"config": {"MYCACHE_URL": 3}})
