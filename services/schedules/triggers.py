"""APScheduler triggers built from a ScheduleSpec. Scheduled times are deterministic:
an ``every:`` schedule is anchored at ``start:`` or the Unix epoch in its zone, never
at "now", so every replica computes the same fire times."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from services.schedules.spec import ScheduleSpec


def build_trigger(spec: ScheduleSpec) -> BaseTrigger:
    tz = ZoneInfo(spec.timezone)
    if spec.trigger == "cron":
        from services.schedules.cron import CrontabTrigger

        assert spec.cron is not None
        return CrontabTrigger(spec.cron, timezone=tz, start_date=spec.start, end_date=spec.end)
    if spec.trigger == "every":
        assert spec.every is not None
        anchor = spec.start or datetime(1970, 1, 1, tzinfo=tz)
        return IntervalTrigger(
            seconds=spec.every.total_seconds(),
            start_date=anchor,
            end_date=spec.end,
            timezone=tz,
        )
    assert spec.at is not None
    return DateTrigger(run_date=spec.at, timezone=tz)
