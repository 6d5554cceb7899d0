"""Cadences (Heroku Scheduler's words and 5-field cron) and which slot is due: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dynod.errors import UserError
from dynod.scheduler import ScheduleClock, due_slot, parse_cadence
from dynod.scheduler.slot import ON_TIME


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "cron"), [
    ("every 10 minutes", "*/10 * * * *"),
    ("Every  30 minutes", "*/30 * * * *"),
    ("every hour at :30", "30 * * * *"),
    ("hourly at :05", "5 * * * *"),
    ("hourly", "0 * * * *"),
    ("every day at 04:30", "30 4 * * *"),
    ("daily at 23:59 UTC", "59 23 * * *"),
    ("*/15 * * * *", "*/15 * * * *"),
    ("0 9 * * mon-fri", "0 9 * * mon-fri"),
])
def test_heroku_words_and_cron_lines_become_cron(text: str, cron: str) -> None:
    assert parse_cadence(text).cron == cron


@pytest.mark.parametrize("text", [
    "", "   ", "every 7 minutes", "every 0 minutes", "hourly at :60", "daily at 24:00", "daily at 4:61",
    "61 * * * *", "* * * * * *", "* * * *", "0 0 30 2 *", "whenever", "x" * 200, "* * * * \x00",
])
def test_a_cadence_that_does_not_parse_is_one_clear_line(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_cadence(text)
    message = str(err.value)
    assert "\n" not in message and ("schedule" in message.lower())


def test_next_and_latest_slots() -> None:
    c = parse_cadence("every 10 minutes")
    assert c.next_after(ts("2026-12-01T12:03:00")) == ts("2026-12-01T12:10:00")
    assert c.next_after(ts("2026-12-01T12:10:00")) == ts("2026-12-01T12:20:00")  # strictly after
    assert c.latest_at_or_before(ts("2026-12-01T12:10:00")) == ts("2026-12-01T12:10:00")  # at counts
    assert c.latest_at_or_before(ts("2026-12-01T12:19:59")) == ts("2026-12-01T12:10:00")
    daily = parse_cadence("every day at 04:30")
    assert daily.next_after(ts("2026-12-01T05:00:00")) == ts("2026-12-02T04:30:00")


C = parse_cadence("every 10 minutes")
CREATED = ts("2026-12-01T12:03:00")


def test_nothing_is_due_before_the_first_slot_after_creation() -> None:
    # The 12:00 slot came before the job existed: it is not "missed".
    assert due_slot(C, last_slot=None, created_at=CREATED, now=ts("2026-12-01T12:09:59"), catch_up=True).slot is None


def test_an_on_time_slot_is_due_once() -> None:
    now = ts("2026-12-01T12:10:01")
    due = due_slot(C, last_slot=None, created_at=CREATED, now=now, catch_up=False)
    assert due.slot == ts("2026-12-01T12:10:00") and not due.missed
    # Once claimed, never again: not on the next look, nor after a clock jump back.
    assert due_slot(C, last_slot=due.slot, created_at=CREATED, now=now + 5, catch_up=True).slot is None
    assert due_slot(C, last_slot=due.slot, created_at=CREATED, now=ts("2026-12-01T11:00:00"),
                    catch_up=True).slot is None


def test_slots_missed_while_down_run_once_or_are_skipped() -> None:
    last = ts("2026-12-01T12:10:00")
    now = ts("2026-12-01T12:45:30")  # 12:20, 12:30 and 12:40 were missed; 12:40 is 330 s late
    due = due_slot(C, last_slot=last, created_at=CREATED, now=now, catch_up=True)
    assert due.slot == ts("2026-12-01T12:40:00") and due.missed  # once, the latest, not three times
    skipped = due_slot(C, last_slot=last, created_at=CREATED, now=now, catch_up=False)
    assert skipped.slot is None and skipped.skipped == ts("2026-12-01T12:40:00")


def test_a_slot_found_within_the_grace_is_on_time_whatever_catch_up_says() -> None:
    now = ts("2026-12-01T12:20:00") + ON_TIME - 1
    due = due_slot(C, last_slot=ts("2026-12-01T12:10:00"), created_at=CREATED, now=now, catch_up=False)
    assert due.slot == ts("2026-12-01T12:20:00") and not due.missed


def test_a_clock_jump_forward_is_one_late_run() -> None:
    due = due_slot(C, last_slot=ts("2026-12-01T12:10:00"), created_at=CREATED, now=ts("2026-12-02T09:00:30"),
                   catch_up=True)
    assert due.slot == ts("2026-12-02T09:00:00") and not due.missed  # the jump landed 30 s after a slot


def test_the_test_clock_runs_fast_about_a_fixed_origin() -> None:
    wall = [ts("2026-12-01T12:00:00")]
    clock = ScheduleClock(rate=30, wall=lambda: wall[0])
    start = clock.now()
    wall[0] += 2
    assert clock.now() - start == pytest.approx(60)
    assert clock.to_wall(clock.now()) == pytest.approx(wall[0])
    assert ScheduleClock(rate=30, wall=lambda: wall[0]).now() == clock.now()  # a restart reads the same time
    assert ScheduleClock().to_schedule(wall[0]) == wall[0]
