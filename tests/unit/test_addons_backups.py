"""pg:backups' pure parts: schedules in Heroku's words, the next run, backup ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dynod.addons.backups import check_id, next_id, next_run, parse_schedule
from dynod.errors import NotFound, UserError


def test_schedules_parse_like_herokus() -> None:
    assert parse_schedule("02:00 UTC") == (2, 0, "UTC")
    assert parse_schedule("2:30") == (2, 30, "UTC")
    assert parse_schedule(" 23:59 America/New_York ") == (23, 59, "America/New_York")


@pytest.mark.parametrize("text", ["", "24:00 UTC", "02:60", "two o'clock", "02:00 Mars/Olympus", "02:00 ../etc"])
def test_bad_schedules_are_one_clear_line(text: str) -> None:
    with pytest.raises(UserError, match="Invalid schedule"):
        parse_schedule(text)


def test_the_next_run_is_the_next_such_wall_clock_time_in_the_zone() -> None:
    noon = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
    assert next_run(2, 0, "UTC", noon) == datetime(2026, 12, 2, 2, 0, tzinfo=UTC).timestamp()
    assert next_run(13, 0, "UTC", noon) == datetime(2026, 12, 1, 13, 0, tzinfo=UTC).timestamp()
    assert next_run(12, 0, "UTC", noon) == datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()  # not now again
    # 02:00 in New York in December is 07:00 UTC.
    assert next_run(2, 0, "America/New_York", noon) == datetime(2026, 12, 2, 7, 0, tzinfo=UTC).timestamp()


def test_ids_count_per_kind_and_are_checked() -> None:
    assert next_id("capture", []) == "b001"
    assert next_id("capture", ["b001", "a001", "b002"]) == "b003"
    assert next_id("scheduled", ["b001"]) == "a001"
    assert next_id("final", ["f009"]) == "f010"
    assert check_id("b001") == "b001"
    for bad in ("../b001", "b1", "x001", "b001/../../x", ""):
        with pytest.raises(NotFound):
            check_id(bad)
