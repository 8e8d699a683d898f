"""services.catchup.plan_fires: which due fires run, which are skipped, which are missed.

Real APScheduler triggers and the project's CrontabTrigger; no database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from services.constants import MAX_MISSED_ROWS, ON_TIME_GRACE_SECONDS
from services.scheduler.catchup import MAX_FIRES_PER_TICK, Plan, plan_fires
from services.schedules.cron import CrontabTrigger
from services.schedules.spec import Catchup

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: A fire time of every trigger below (a whole hour).
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
GRACE = timedelta(seconds=ON_TIME_GRACE_SECONDS)
POLICIES: tuple[Catchup, ...] = ("all", "latest", "none")


class Counting:
    """Wraps a trigger and counts get_next_fire_time calls (work done, not wall time)."""

    def __init__(self, trigger: BaseTrigger) -> None:
        self.trigger = trigger
        self.calls = 0

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        self.calls += 1
        result: datetime | None = self.trigger.get_next_fire_time(previous_fire_time, now)
        return result


def every(seconds: float) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds, start_date=EPOCH, timezone=UTC)


def produced(trigger: BaseTrigger, first: datetime, until: datetime) -> list[datetime]:
    """Every fire the trigger itself yields from ``first`` up to ``until``, by chaining."""
    out: list[datetime] = []
    t: datetime | None = first
    while t is not None and t <= until:
        out.append(t)
        t = trigger.get_next_fire_time(t, until)
    return out


def planned(plan: Plan) -> list[datetime]:
    return [t for t, _ in plan.fire] + plan.skipped + plan.missed


def run_ticks(
    trigger: BaseTrigger, first: datetime, now: datetime, **kwargs: object
) -> Iterator[Plan]:
    """Call plan_fires tick after tick (same ``now``) until nothing more is due."""
    t: datetime | None = first
    for _ in range(10_000):
        if t is None or t > now:
            return
        plan = plan_fires(trigger, t, now, **kwargs)  # type: ignore[arg-type]
        yield plan
        t = plan.next_run_time
    raise AssertionError("plan_fires made no progress")


# --- on time -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("delay", [0.0, 2.0, ON_TIME_GRACE_SECONDS])
def test_on_time_fire_is_scheduled_under_every_policy(policy: Catchup, delay: float) -> None:
    trigger = every(60)
    now = T0 + timedelta(seconds=delay)
    plan = plan_fires(trigger, T0, now, policy=policy, window=HOUR)
    assert plan.fire == [(T0, "scheduled")]
    assert plan.skipped == [] and plan.missed == [] and plan.missed_unrecorded == 0
    assert plan.next_run_time == T0 + timedelta(seconds=60)


def test_nothing_due_yet_keeps_next_run_time() -> None:
    plan = plan_fires(every(60), T0, T0 - timedelta(seconds=1), policy="all", window=HOUR)
    assert planned(plan) == []
    assert plan.next_run_time == T0


def test_cron_trigger_on_time_in_its_zone() -> None:
    trigger = CrontabTrigger("30 13 * * *", timezone="Europe/Berlin")
    # 13:30 in Berlin on 10 March 2026 (CET, UTC+1) is 12:30 UTC.
    first = trigger.get_next_fire_time(None, T0)
    assert first == datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    plan = plan_fires(trigger, first, first + timedelta(seconds=1), policy="none", window=HOUR)
    assert plan.fire == [(first, "scheduled")]
    assert plan.next_run_time == first + timedelta(days=1)


# --- late fires inside the window ------------------------------------------------------------


def late_setup() -> tuple[IntervalTrigger, datetime, list[datetime]]:
    """Ten fires a minute apart, all late (the newest 30 s ago), none on time."""
    trigger = every(60)
    now = T0 + timedelta(minutes=9, seconds=30)
    fires = [T0 + timedelta(minutes=i) for i in range(10)]
    return trigger, now, fires


def test_policy_all_fires_every_late_one_as_catchup() -> None:
    trigger, now, fires = late_setup()
    plan = plan_fires(trigger, T0, now, policy="all", window=HOUR)
    assert plan.fire == [(t, "catchup") for t in fires]
    assert plan.skipped == [] and plan.missed == []
    assert plan.next_run_time == T0 + timedelta(minutes=10)


def test_policy_latest_fires_only_the_newest_and_skips_the_rest() -> None:
    trigger, now, fires = late_setup()
    plan = plan_fires(trigger, T0, now, policy="latest", window=HOUR)
    assert plan.fire == [(fires[-1], "catchup")]
    assert plan.skipped == fires[:-1]
    assert plan.missed == []
    assert plan.next_run_time == T0 + timedelta(minutes=10)


def test_policy_none_skips_all_late_fires() -> None:
    trigger, now, fires = late_setup()
    plan = plan_fires(trigger, T0, now, policy="none", window=HOUR)
    assert plan.fire == []
    assert plan.skipped == fires
    assert plan.next_run_time == T0 + timedelta(minutes=10)


@pytest.mark.parametrize("policy", POLICIES)
def test_late_fires_plus_an_on_time_one(policy: Catchup) -> None:
    trigger = every(60)
    now = T0 + timedelta(minutes=5, seconds=1)  # T0+5m is on time, T0..T0+4m are late
    late = [T0 + timedelta(minutes=i) for i in range(5)]
    on_time = T0 + timedelta(minutes=5)
    plan = plan_fires(trigger, T0, now, policy=policy, window=HOUR)
    if policy == "all":
        assert plan.fire == [(t, "catchup") for t in late] + [(on_time, "scheduled")]
        assert plan.skipped == []
    else:
        # The newest fire runs on time, so nothing late runs (latest) or ever runs (none).
        assert plan.fire == [(on_time, "scheduled")]
        assert plan.skipped == late


def test_grace_boundary() -> None:
    trigger = every(60)
    # Exactly `grace` late is on time; a microsecond more is late.
    plan = plan_fires(trigger, T0, T0 + GRACE, policy="none", window=HOUR)
    assert plan.fire == [(T0, "scheduled")]
    plan = plan_fires(
        trigger, T0, T0 + GRACE + timedelta(microseconds=1), policy="none", window=HOUR
    )
    assert plan.fire == [] and plan.skipped == [T0]


# --- outside the window: missed ------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_fires_older_than_the_window_are_missed(policy: Catchup) -> None:
    trigger = every(600)  # every 10 minutes
    now = T0 + timedelta(hours=2, minutes=5)
    window = HOUR
    plan = plan_fires(trigger, T0, now, policy=policy, window=window)
    fires = produced(trigger, T0, now)
    assert plan.missed == [t for t in fires if t < now - window]
    assert len(plan.missed) == 7  # 12:00 … 13:00 (13:05 - 1h = 13:05 is the window start)
    assert plan.missed_unrecorded == 0
    inside = [t for t in fires if t >= now - window]
    assert inside and all(t < now - GRACE for t in inside)
    if policy == "all":
        assert plan.fire == [(t, "catchup") for t in inside]
    elif policy == "latest":
        assert plan.fire == [(inside[-1], "catchup")]
        assert plan.skipped == inside[:-1]
    else:
        assert plan.fire == [] and plan.skipped == inside
    assert plan.next_run_time == T0 + timedelta(hours=2, minutes=10)


def test_window_start_itself_is_inside_the_window() -> None:
    trigger = every(600)
    now = T0 + HOUR
    plan = plan_fires(trigger, T0, now, policy="all", window=HOUR)
    assert T0 not in plan.missed
    assert (T0, "catchup") in plan.fire


@pytest.mark.parametrize(
    "trigger",
    [every(1), CrontabTrigger("* * * * * *", timezone="UTC")],
    ids=["every-1s", "cron-every-second"],
)
def test_huge_gap_jumps_to_the_window(trigger: BaseTrigger) -> None:
    """`every 1s` down for 3 days with a 1 h window: ~255,600 missed fires, 3,600 in the window."""
    now = T0 + timedelta(days=3)
    first = T0
    counting = Counting(trigger)
    plan = plan_fires(counting, first, now, policy="latest", window=HOUR)

    assert 0 < len(plan.missed) <= MAX_MISSED_ROWS
    assert plan.missed_unrecorded > 0
    assert plan.missed == produced(trigger, first, plan.missed[-1])  # the oldest, in order
    assert all(t < now - HOUR for t in plan.missed)
    # It jumped to the window: no walk through the quarter million fires in the gap.
    assert plan.next_run_time is not None
    assert now - HOUR <= plan.next_run_time <= now
    gap_fires = int((now - HOUR - first).total_seconds())
    assert counting.calls < gap_fires / 10, counting.calls

    # The following ticks only work through the window; what runs is the on-time fires
    # (within the grace, every one of them runs), no late one.
    later = list(run_ticks(trigger, plan.next_run_time, now, policy="latest", window=HOUR))
    assert len(later) <= HOUR.total_seconds() // MAX_FIRES_PER_TICK + 1
    assert all(p.missed == [] and p.missed_unrecorded == 0 for p in later)
    fired = [f for p in [plan, *later] for f in p.fire]
    assert fired == [(t, "scheduled") for t in produced(trigger, now - GRACE, now)]


def test_huge_gap_with_policy_all_fires_the_window_only() -> None:
    trigger = every(1)
    now = T0 + timedelta(days=3)
    ticks = list(run_ticks(trigger, T0, now, policy="all", window=HOUR))
    fired = [t for p in ticks for t, _ in p.fire]
    assert fired == produced(trigger, now - HOUR, now)
    assert sum(len(p.missed) for p in ticks) <= MAX_MISSED_ROWS
    assert len(ticks) <= 10


# --- limit per tick ----------------------------------------------------------------------------


def test_limit_truncates_and_leaves_the_rest_due() -> None:
    trigger, now, fires = late_setup()
    plan = plan_fires(trigger, T0, now, policy="all", window=HOUR, limit=3)
    assert plan.fire == [(t, "catchup") for t in fires[:3]]
    assert plan.next_run_time == fires[3]
    assert plan.next_run_time <= now  # more is due: the scheduler comes back at once


def test_limit_with_latest_fires_nothing_in_a_truncated_chunk() -> None:
    trigger, now, fires = late_setup()
    plan = plan_fires(trigger, T0, now, policy="latest", window=HOUR, limit=3)
    assert plan.fire == []
    assert plan.skipped == fires[:3]
    assert plan.next_run_time is not None and plan.next_run_time <= now


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("limit", [1, 3, 4, 10, 1000])
def test_ticks_cover_every_fire_exactly_once(policy: Catchup, limit: int) -> None:
    trigger, now, fires = late_setup()
    ticks = list(run_ticks(trigger, T0, now, policy=policy, window=HOUR, limit=limit))
    assert all(len(planned(p)) <= limit for p in ticks)
    everything = [t for p in ticks for t in planned(p)]
    assert sorted(everything) == fires
    fired = [f for p in ticks for f in p.fire]
    if policy == "all":
        assert fired == [(t, "catchup") for t in fires]
    elif policy == "latest":
        assert fired == [(fires[-1], "catchup")]
    else:
        assert fired == []


# --- exhausted triggers ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_date_trigger_is_exhausted_after_its_one_fire(policy: Catchup) -> None:
    run = T0 - timedelta(minutes=10)
    trigger = DateTrigger(run_date=run, timezone=UTC)
    plan = plan_fires(trigger, run, T0, policy=policy, window=HOUR)
    assert plan.next_run_time is None
    if policy == "none":
        assert plan.fire == [] and plan.skipped == [run]
    else:
        assert plan.fire == [(run, "catchup")]


def test_date_trigger_outside_the_window_is_missed_and_exhausted() -> None:
    run = T0 - timedelta(hours=3)
    plan = plan_fires(DateTrigger(run_date=run, timezone=UTC), run, T0, policy="all", window=HOUR)
    assert plan.missed == [run] and plan.fire == []
    assert plan.next_run_time is None


def test_interval_end_date_exhausts() -> None:
    trigger = IntervalTrigger(
        minutes=1, start_date=EPOCH, end_date=T0 + timedelta(minutes=2), timezone=UTC
    )
    now = T0 + timedelta(minutes=10)
    plan = plan_fires(trigger, T0, now, policy="all", window=HOUR)
    assert [t for t, _ in plan.fire] == [T0 + timedelta(minutes=i) for i in range(3)]
    assert plan.next_run_time is None


# --- properties over many cases ----------------------------------------------------------------

TRIGGERS: dict[str, BaseTrigger] = {
    "every-7s": every(7),
    "every-90s": every(90),
    "every-1h": every(3600),
    "cron-*/5-berlin": CrontabTrigger("*/5 * * * *", timezone="Europe/Berlin"),
    "cron-hourly-ny": CrontabTrigger("17 * * * *", timezone="America/New_York"),
    "cron-weekday-mornings": CrontabTrigger("0 8 * * 1-5", timezone="Asia/Tokyo"),
}


@pytest.mark.parametrize("name", sorted(TRIGGERS))
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("down", [timedelta(seconds=3), timedelta(minutes=40), timedelta(hours=7)])
def test_every_planned_time_is_a_trigger_time_and_none_twice(
    name: str, policy: Catchup, down: timedelta
) -> None:
    trigger = TRIGGERS[name]
    first = trigger.get_next_fire_time(None, T0)
    assert first is not None
    now = first + down
    window = HOUR
    ticks = list(run_ticks(trigger, first, now, policy=policy, window=window, limit=50))
    everything = [t for p in ticks for t in planned(p)]
    expected = produced(trigger, first, now)
    assert len(everything) == len(set(everything))
    # Every trigger time is planned, except missed ones beyond MAX_MISSED_ROWS, which are
    # only counted.
    assert set(everything) <= set(expected)
    unrecorded = sum(p.missed_unrecorded for p in ticks)
    assert len(expected) - len(everything) == unrecorded
    assert sum(len(p.missed) for p in ticks) <= MAX_MISSED_ROWS
    assert sorted(everything)[-min(len(expected), 100) :] == expected[-100:]
    for p in ticks:
        assert all(t < now - window for t in p.missed)
        assert all(t >= now - window for t, _ in p.fire)
        assert all(t >= now - window for t in p.skipped)
        for t, kind in p.fire:
            assert kind == ("scheduled" if t >= now - GRACE else "catchup")
    final = ticks[-1].next_run_time if ticks else first
    assert final is not None and final > now
    if expected:
        assert final == trigger.get_next_fire_time(expected[-1], now)
