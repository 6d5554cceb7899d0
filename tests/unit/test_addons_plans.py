"""The add-on services, plans and names: pure rules, no servers."""

from __future__ import annotations

import random

import pytest

from dynod.addons.plans import COLORS, POSTGRESQL, REDIS, addon_name, default_attachment, parse_spec
from dynod.errors import NotFound, UserError


def test_specs_parse_like_herokus() -> None:
    assert parse_spec("heroku-postgresql:essential-0") == ("heroku-postgresql", "essential-0")
    assert parse_spec("heroku-redis") == ("heroku-redis", None)
    assert parse_spec("postgresql:standard-0") == ("heroku-postgresql", "standard-0")
    assert parse_spec("redis") == ("heroku-redis", None)


@pytest.mark.parametrize("spec", ["", ":plan", "heroku postgresql", "heroku-postgresql:", "a:b:c", "Ü"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(UserError, match="Invalid add-on"):
        parse_spec(spec)


def test_plans_carry_real_limits_and_a_default() -> None:
    assert POSTGRESQL.plan(None).name == "essential-0"
    essential = POSTGRESQL.plan("essential-0")
    assert (essential.storage_mb, essential.connections) == (1024, 20)
    assert REDIS.plan(None).name == "mini" and REDIS.plan("mini").memory_mb == 25
    assert REDIS.plan("premium-0").maxmemory_policy == "noeviction"
    with pytest.raises(NotFound, match="Couldn't find that plan: heroku-redis:huge"):
        REDIS.plan("huge")


def test_the_first_attachment_is_database_then_colors() -> None:
    rng = random.Random(3)
    assert default_attachment(POSTGRESQL, set(), rng) == "DATABASE"
    second = default_attachment(POSTGRESQL, {"DATABASE"}, rng)
    assert second.startswith("HEROKU_POSTGRESQL_") and second.removeprefix("HEROKU_POSTGRESQL_") in COLORS
    assert default_attachment(REDIS, {"DATABASE"}, rng) == "REDIS"
    everything = {"DATABASE"} | {f"HEROKU_POSTGRESQL_{c}" for c in COLORS}
    with pytest.raises(UserError, match="--as NAME"):
        default_attachment(POSTGRESQL, everything, rng)


def test_addon_names_look_like_herokus_and_avoid_taken_ones() -> None:
    rng = random.Random(1)
    first = addon_name(POSTGRESQL, set(), random.Random(1))
    assert first.startswith("postgresql-") and first.rsplit("-", 1)[1].isdigit()
    assert addon_name(POSTGRESQL, {first}, random.Random(1)) != first
    assert addon_name(REDIS, set(), rng).startswith("redis-")
