"""The platform's rules (dynod.platform.rules): pure, so each case runs in microseconds, no root."""

from __future__ import annotations

import random

import pytest

from dynod.errors import NotFound, UserError
from dynod.model import AddonRef, Formation, Release
from dynod.platform import rules
from dynod.platform.rules import FormationChange

# -- config changes -------------------------------------------------------------------------------

def test_a_change_sets_and_unsets_and_says_both_sorted() -> None:
    change = rules.config_change({"A": "1", "B": "2"}, {"Z": "9", "C": "3", "B": None, "A": None})
    assert change == rules.ConfigChange(config={"C": "3", "Z": "9"},
                                        description="Set C, Z config vars; Remove A, B config vars")


@pytest.mark.parametrize("changes", [{"A": "1"}, {"GONE": None}, {"A": "1", "GONE": None}])
def test_a_change_that_changes_nothing_makes_no_release(changes: dict[str, str | None]) -> None:
    assert rules.config_change({"A": "1"}, changes) is None


def test_unsetting_a_var_that_is_not_set_is_not_named() -> None:
    change = rules.config_change({"A": "1"}, {"B": "2", "GONE": None})
    assert change is not None and change.description == "Set B config vars"


def test_setting_a_var_to_its_own_value_beside_a_real_change_still_names_it() -> None:
    # The release names every var the command set: the user asked for both.
    change = rules.config_change({"A": "1"}, {"A": "1", "B": "2"})
    assert change is not None and change.description == "Set A, B config vars"


@pytest.mark.parametrize(("changes", "message"), [
    ({}, "No config vars given"),
    ({"1A": "x"}, "Invalid config var name '1A'"),
    ({"A-B": "x"}, "Invalid config var name"),
    ({"PORT": "80"}, "PORT is set by the platform"),
    ({"A": 1}, "Config var A must be a string, got int"),
    ({"A": ["x"]}, "must be a string, got list"),
])
def test_bad_changes_are_one_clear_line(changes: dict[str, object], message: str) -> None:
    config = {"KEEP": "me"}
    with pytest.raises(UserError, match=message) as refused:
        rules.config_change(config, changes)
    assert "\n" not in str(refused.value) and config == {"KEEP": "me"}


def test_the_32kb_limit_refuses_growth_past_it_but_lets_an_oversized_app_shrink() -> None:
    at_limit = {"A": "x" * (rules.CONFIG_LIMIT_BYTES - 1)}
    assert rules.config_bytes(at_limit) == rules.CONFIG_LIMIT_BYTES
    with pytest.raises(UserError, match="limited to 32kb") as refused:
        rules.config_change(at_limit, {"B": "y"})
    assert refused.value.status == 422
    oversized = {"A": "x" * 40_000, "B": "y" * 1000}
    shrunk = rules.config_change(oversized, {"B": None})
    assert shrunk is not None and shrunk.config == {"A": "x" * 40_000}


def test_the_limit_counts_bytes_not_characters() -> None:
    nearly = {"A": "x" * (rules.CONFIG_LIMIT_BYTES - 10)}
    with pytest.raises(UserError, match="limited to 32kb"):
        rules.config_change(nearly, {"B": "é" * 5})  # 5 characters, 10 bytes, plus the name


def test_the_input_config_is_not_modified() -> None:
    config = {"A": "1"}
    rules.config_change(config, {"A": None, "B": "2"})
    assert config == {"A": "1"}


# -- formation changes ----------------------------------------------------------------------------

TYPES = {"web": "python app.py", "worker": "python w.py", "release": "migrate", "scheduler": "cron"}


def _rows(**quantities: tuple[int, str]) -> list[Formation]:
    return [Formation(app="shop", type=t, quantity=q, size=s) for t, (q, s) in quantities.items()]


def test_formation_changes_are_checked_and_sizes_made_canonical() -> None:
    changes = rules.formation_changes("shop", [{"type": "web", "quantity": 3, "size": "STANDARD-2x"},
                                               {"type": "worker", "size": "performance-m"}],
                                      TYPES, _rows(web=(1, "standard-1X"), worker=(1, "standard-1X")))
    assert changes == [FormationChange("web", 3, "standard-2X"), FormationChange("worker", None, "performance-M")]


@pytest.mark.parametrize(("update", "error", "message"), [
    ({"type": "clock", "quantity": 1}, NotFound, r"Couldn't find that process type \(clock\); this app has: "
                                                 "release, scheduler, web, worker"),
    ({"quantity": 1}, NotFound, r"process type \(None\)"),
    ({"type": "release", "quantity": 1}, UserError, "runs once per release"),
    ({"type": "scheduler", "quantity": 1}, UserError, "scheduler's one-off runs"),
    ({"type": "web", "quantity": -1}, UserError, "Invalid quantity -1 for web: use a whole number from 0 to 100"),
    ({"type": "web", "quantity": 101}, UserError, "from 0 to 100"),
    ({"type": "web", "quantity": True}, UserError, "Invalid quantity True"),
    ({"type": "web", "quantity": "2"}, UserError, "Invalid quantity '2'"),
    ({"type": "web", "size": "huge"}, UserError, "Unknown dyno size 'huge'"),
    ({"type": "web", "quantity": 2, "size": "basic"}, UserError, "Cannot run more than 1 basic dyno"),
    ({"type": "web", "size": "eco"}, UserError, "Eco dynos cannot run beside other sizes"),
])
def test_bad_formation_changes_are_refused(update: dict[str, object], error: type[Exception],
                                           message: str) -> None:
    with pytest.raises(error, match=message):
        rules.formation_changes("shop", [update], TYPES, _rows(web=(1, "standard-1X"), worker=(1, "standard-1X")))


def test_one_bad_entry_refuses_the_whole_update_before_anything_is_applied() -> None:
    # The second entry is the bad one: the check must see it before the first is written.
    with pytest.raises(UserError, match="Cannot run more than 1 basic dyno"):
        rules.formation_changes("shop", [{"type": "worker", "quantity": 0},
                                         {"type": "web", "quantity": 2, "size": "basic"}],
                                TYPES, _rows(web=(1, "standard-1X"), worker=(1, "standard-1X")))


def test_a_single_dyno_size_already_set_limits_a_later_scale() -> None:
    with pytest.raises(UserError, match="Cannot run more than 1 basic dyno"):
        rules.formation_changes("shop", [{"type": "web", "quantity": 2}], TYPES, _rows(web=(1, "basic")))


def test_an_app_may_go_all_eco_in_one_update() -> None:
    changes = rules.formation_changes("shop", [{"type": "web", "size": "eco"}, {"type": "worker", "size": "eco"}],
                                      TYPES, _rows(web=(1, "standard-1X"), worker=(1, "standard-1X")))
    assert [c.size for c in changes] == ["eco", "eco"]


def test_no_process_types_says_deploy_first() -> None:
    with pytest.raises(NotFound, match="none: deploy a Procfile first"):
        rules.formation_changes("shop", [{"type": "web", "quantity": 1}], {}, [])


# -- memory ---------------------------------------------------------------------------------------

def test_memory_before_and_after_counts_every_app_and_applies_only_this_apps_changes() -> None:
    formations = {"shop": {"web": (2, "standard-1X"), "worker": (1, "standard-2X")},
                  "blog": {"web": (1, "performance-M")}}
    before, after = rules.memory_before_and_after(
        formations, "shop", [FormationChange("web", None, "standard-2X"), FormationChange("clock", 1, None)])
    assert before == 2 * 512 + 1024 + 2560
    assert after == 2 * 1024 + 1024 + 512 + 2560  # web resized, worker kept, a new clock at the default size
    assert formations["shop"]["web"] == (2, "standard-1X")  # the input is not modified


def test_host_memory_refuses_growth_past_the_offer_and_allows_any_shrink() -> None:
    rules.check_host_memory(before_mb=0, after_mb=4096, host_mb=4096, ratio=1.0)
    with pytest.raises(UserError, match="Not enough memory on this host") as refused:
        rules.check_host_memory(before_mb=4096, after_mb=4097, host_mb=4096, ratio=1.0)
    assert refused.value.code == "insufficient_memory" and "\n" not in str(refused.value)
    rules.check_host_memory(before_mb=9000, after_mb=8000, host_mb=4096, ratio=1.0)  # over-full: may shrink


# -- releases -------------------------------------------------------------------------------------

def test_deploy_descriptions() -> None:
    slug = "3f2a1c" + "0" * 58
    assert rules.slug_release_description(slug) == "Deploy 3f2a1c"
    assert rules.build_release_description("1a2b3c4d5e", slug) == "Deploy 1a2b3c4"
    assert rules.build_release_description(None, slug) == "Deploy 3f2a1c0"


def test_rollback_goes_to_the_release_before_current_or_the_one_named() -> None:
    assert rules.rollback_version("shop", 5, None) == 4
    assert rules.rollback_version("shop", 5, 2) == 2
    assert rules.rollback_description(2) == "Rollback to v2"
    with pytest.raises(UserError, match="shop has no release before v1 to roll back to"):
        rules.rollback_version("shop", 1, None)
    with pytest.raises(UserError, match="no release before v5"):
        rules.rollback_version("shop", 5, 0)


def _release(version: int, config: dict[str, str], *refs: AddonRef) -> Release:
    return Release(app="shop", version=version, slug_id=None, config=config, description="", created_at=0.0,
                   addons=refs)


def test_rollback_config_keeps_the_add_ons_of_now() -> None:
    db = AddonRef(addon="postgresql-a-1", attachment="DATABASE", service="heroku-postgresql", plan="mini")
    redis = AddonRef(addon="redis-b-2", attachment="REDIS", service="heroku-redis", plan="mini")
    old = _release(2, {"A": "old", "DATABASE_URL": "postgres://old", "REDIS_URL": "redis://gone"}, db, redis)
    now = _release(5, {"A": "new", "DATABASE_URL": "postgres://rotated"}, db)
    assert rules.rollback_config(old, now) == {"A": "old", "DATABASE_URL": "postgres://rotated"}
    assert rules.rollback_addons_warning("shop", old, now) == (
        "v2 had add-ons DATABASE (postgresql-a-1), REDIS (redis-b-2); shop has DATABASE (postgresql-a-1). "
        "A rollback does not create, destroy, attach or detach add-ons: use addons:create/attach/detach for that.")
    assert rules.rollback_addons_warning("shop", now, now) is None
    assert old.config["REDIS_URL"] == "redis://gone"  # the inputs are not modified


def test_rollback_config_adds_an_add_on_attached_since() -> None:
    db = AddonRef(addon="postgresql-a-1", attachment="DATABASE", service="heroku-postgresql", plan="mini")
    old, now = _release(1, {"A": "1"}), _release(3, {"A": "2", "DATABASE_URL": "postgres://x"}, db)
    assert rules.rollback_config(old, now) == {"A": "1", "DATABASE_URL": "postgres://x"}
    assert "v1 had add-ons none; shop has DATABASE" in (rules.rollback_addons_warning("shop", old, now) or "")


def test_generated_app_names_avoid_taken_ones() -> None:
    first = rules.generated_app_name(set(), random.Random(7))
    again = rules.generated_app_name({first}, random.Random(7))  # the same draw, taken: the next one
    assert again != first
    adjective, noun, number = again.split("-")
    assert adjective in rules.ADJECTIVES and noun in rules.NOUNS and 10000 <= int(number) < 99999
