"""services.triggers.build_trigger: deterministic fire times every replica agrees on."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger

from services.schedules.cron import CrontabTrigger
from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger

NOW = datetime(2026, 3, 10, 12, 7, 13, 250_000, tzinfo=UTC)


def fires(trigger: BaseTrigger, now: datetime, n: int) -> list[datetime]:
    out: list[datetime] = []
    t = trigger.get_next_fire_time(None, now)
    while t is not None and len(out) < n:
        out.append(t)
        # As the scheduler and the CLI do: "now" never lies before the previous fire.
        t = trigger.get_next_fire_time(t, t)
    return out


def every(interval: timedelta, tz: str = "UTC", **kw: object) -> ScheduleSpec:
    return ScheduleSpec(name="e", actor="a", trigger="every", every=interval, timezone=tz, **kw)  # type: ignore[arg-type]


def test_every_is_anchored_not_at_build_time() -> None:
    spec = every(timedelta(minutes=15))
    a = build_trigger(spec)
    time.sleep(0.05)
    b = build_trigger(spec)
    assert fires(a, NOW, 5) == fires(b, NOW, 5)
    # Aligned to the epoch: quarter hours, whatever the clock said when built.
    assert fires(a, NOW, 3) == [
        datetime(2026, 3, 10, 12, 15, tzinfo=UTC),
        datetime(2026, 3, 10, 12, 30, tzinfo=UTC),
        datetime(2026, 3, 10, 12, 45, tzinfo=UTC),
    ]
    # A replica asking a little later agrees on the times it shares.
    later = fires(b, NOW + timedelta(minutes=20), 2)
    assert later == fires(a, NOW, 3)[1:]


@pytest.mark.parametrize("seconds", [1, 7, 60, 90, 3600, 86400])
def test_every_fire_times_are_multiples_of_the_interval_since_the_epoch(seconds: int) -> None:
    trigger = build_trigger(every(timedelta(seconds=seconds)))
    for t in fires(trigger, NOW, 5):
        assert t.timestamp() % seconds == 0
        assert t >= NOW


def test_every_is_aligned_to_the_epoch_in_its_zone() -> None:
    # Local midnight of 1 Jan 1970 in Kolkata (UTC+05:30) is 18:30 UTC the day before,
    # so an hourly schedule there fires on UTC half-hours, at whole local hours.
    trigger = build_trigger(every(timedelta(hours=1), "Asia/Kolkata"))
    times = fires(trigger, NOW, 3)
    assert [t.astimezone(UTC).minute for t in times] == [30, 30, 30]
    assert [t.astimezone(ZoneInfo("Asia/Kolkata")).minute for t in times] == [0, 0, 0]
    assert times[0] == datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    daily = build_trigger(every(timedelta(days=1), "Asia/Tokyo"))
    assert [t.astimezone(ZoneInfo("Asia/Tokyo")).hour for t in fires(daily, NOW, 3)] == [0, 0, 0]


def test_every_is_anchored_at_start_when_given() -> None:
    start = datetime(2026, 3, 10, 12, 0, 7, tzinfo=UTC)
    trigger = build_trigger(every(timedelta(minutes=10), start=start))
    assert fires(trigger, NOW, 3) == [
        start + timedelta(minutes=10),
        start + timedelta(minutes=20),
        start + timedelta(minutes=30),
    ]
    # Before the start, the first fire is the start itself.
    assert fires(trigger, start - timedelta(days=1), 1) == [start]


def test_every_stops_at_end() -> None:
    end = datetime(2026, 3, 10, 12, 45, tzinfo=UTC)
    trigger = build_trigger(every(timedelta(minutes=15), end=end))
    assert fires(trigger, NOW, 10) == [
        datetime(2026, 3, 10, 12, 15, tzinfo=UTC),
        datetime(2026, 3, 10, 12, 30, tzinfo=UTC),
        end,
    ]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York"])
def test_at_fires_once_then_never(tz: str) -> None:
    at = datetime(2026, 6, 1, 8, 30, tzinfo=UTC)
    spec = ScheduleSpec(name="once", actor="a", trigger="at", at=at, timezone=tz)
    trigger = build_trigger(spec)
    assert isinstance(trigger, DateTrigger)
    first = trigger.get_next_fire_time(None, NOW)
    assert first == at
    assert trigger.get_next_fire_time(first, NOW) is None
    # Asked after the time has passed, it still reports it (so catch-up can run or miss it).
    assert trigger.get_next_fire_time(None, at + timedelta(days=1)) == at


def test_at_without_offset_is_in_the_schedule_zone() -> None:
    spec = ScheduleSpec(
        name="once", actor="a", trigger="at", at=datetime(2026, 6, 1, 8, 30), timezone="Asia/Tokyo"
    )
    first = build_trigger(spec).get_next_fire_time(None, NOW)
    assert first == datetime(2026, 5, 31, 23, 30, tzinfo=UTC)


def test_cron_uses_crontab_trigger_in_the_zone() -> None:
    spec = ScheduleSpec(
        name="c", actor="a", trigger="cron", cron="0 8 * * 1", timezone="America/New_York"
    )
    trigger = build_trigger(spec)
    assert isinstance(trigger, CrontabTrigger)
    assert trigger.timezone == ZoneInfo("America/New_York")
    times = fires(trigger, NOW, 3)
    # Mondays at 08:00 New York time (EDT from 8 March 2026: UTC-4).
    assert times == [
        datetime(2026, 3, 16, 12, tzinfo=UTC),
        datetime(2026, 3, 23, 12, tzinfo=UTC),
        datetime(2026, 3, 30, 12, tzinfo=UTC),
    ]
    # Day-of-week 0 and 7 are both Sunday (crontab, not APScheduler's from_crontab).
    sunday = build_trigger(ScheduleSpec(name="s", actor="a", trigger="cron", cron="0 0 * * 7"))
    assert all(t.weekday() == 6 for t in fires(sunday, NOW, 3))


def test_cron_respects_start_and_end() -> None:
    start = datetime(2026, 4, 1, tzinfo=UTC)
    end = datetime(2026, 4, 3, tzinfo=UTC)
    spec = ScheduleSpec(name="c", actor="a", trigger="cron", cron="0 6 * * *", start=start, end=end)
    assert fires(build_trigger(spec), NOW, 10) == [
        datetime(2026, 4, 1, 6, tzinfo=UTC),
        datetime(2026, 4, 2, 6, tzinfo=UTC),
    ]
