"""The watchdog's memo of each schedule's last expected fire (services/watch/fire_checks.py)
answers exactly as ``last_fire_time`` computed afresh does, pass after pass."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.watch.fire_checks import LastFireTimes, last_fire_time

START = datetime(2026, 3, 27, 22, 0, tzinfo=UTC)  # the weekend Europe's clocks go forward

SPECS = [
    ScheduleSpec(name="daily", actor="a", trigger="cron", cron="30 2 * * *",
                 timezone="Europe/Berlin"),
    ScheduleSpec(name="weekdays", actor="a", trigger="cron", cron="*/7 * * * mon-fri"),
    ScheduleSpec(name="every", actor="a", trigger="every", every=timedelta(seconds=97)),
    ScheduleSpec(name="later", actor="a", trigger="every", every=timedelta(minutes=5),
                 start=START + timedelta(hours=5)),
    ScheduleSpec(name="ends", actor="a", trigger="cron", cron="0 * * * *",
                 end=START + timedelta(hours=30)),
    ScheduleSpec(name="once", actor="a", trigger="at", at=START + timedelta(hours=3)),
]  # fmt: skip


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_the_memo_answers_as_a_fresh_walk_does(spec: ScheduleSpec) -> None:
    trigger = build_trigger(spec)
    memo = LastFireTimes()
    rng = random.Random(spec.name)
    before = START
    for _ in range(400):
        # Mostly forward by up to a pass or two, sometimes far, sometimes back (a clock).
        step = rng.choice([10, 30, 60, 600, 3600 * 7, -900])
        before += timedelta(seconds=step * rng.random())
        assert memo(spec.name, trigger, before) == last_fire_time(trigger, before), before


def test_a_new_trigger_for_a_name_is_walked_afresh() -> None:
    before = START + timedelta(days=2)
    hourly = ScheduleSpec(name="x", actor="a", trigger="cron", cron="0 * * * *")
    daily = ScheduleSpec(name="x", actor="a", trigger="cron", cron="0 0 * * *")
    memo = LastFireTimes()
    assert memo("x", build_trigger(hourly), before) == before.replace(minute=0)
    assert memo("x", build_trigger(daily), before) == before.replace(hour=0, minute=0)


def test_a_frequent_schedule_after_a_long_gap() -> None:
    # Every 7 minutes on weekdays, asked early on Sunday: Friday's last fire, not one of
    # thousands of older ones a bounded walk from a month back would stop at.
    spec = ScheduleSpec(name="w", actor="a", trigger="cron", cron="*/7 * * * mon-fri")
    sunday = datetime(2026, 3, 29, 3, 26, tzinfo=UTC)
    assert last_fire_time(build_trigger(spec), sunday) == datetime(2026, 3, 27, 23, 56, tzinfo=UTC)
