"""CrontabTrigger: crontab semantics checked against croniter, DST rules, errors, pickling."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.base import BaseTrigger
from croniter import croniter

from services.errors import CronError
from services.schedules.cron import CronExpression, CrontabTrigger, parse_crontab

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
#: A "now" far ahead, so get_next_fire_time searches from previous_fire_time (as when the
#: scheduler enumerates missed fires).
FAR = datetime(9000, 1, 1, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(trigger: CrontabTrigger, start: datetime, count: int) -> list[datetime]:
    """The first ``count`` fires at or after ``start``, chained as APScheduler chains them."""
    out: list[datetime] = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and len(out) < count:
        out.append(fire)
        fire = trigger.get_next_fire_time(fire, FAR)
    return out


def fires_between(trigger: CrontabTrigger, start: datetime, end: datetime) -> list[datetime]:
    out = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire < end:
        out.append(fire)
        fire = trigger.get_next_fire_time(fire, FAR)
    return out


def as_utc(times: list[datetime]) -> list[datetime]:
    return [t.astimezone(UTC) for t in times]


# --- agreement with croniter ------------------------------------------------------------------

FIXED_EXPRESSIONS = [
    "* * * * *",
    "0 8 * * 1",
    "0 9 * * 1-5",
    "0 9 * * mon-fri",
    "0 9 * * MON-Fri",
    "0 0 1,15 * 5",
    "0 6 1 * *",
    "0 0 * * 0",
    "0 0 * * 7",
    "0 0 * * sun",
    "0 0 * * 5-7",
    "0 0 * * 6,7",
    "*/15 * * * *",
    "5-50/7 */3 * * *",
    "10/20 * * * *",
    "0 12/5 * * *",
    "0 0 */2 * *",
    "0 0 1-10/3 * *",
    "30 4 1,15 * 5",
    "0 0 13 * 5",
    "0 0 */2 * 1",
    "0 0 1 * */2",
    "0 0 31 * *",
    "0 0 29 2 *",
    "0 0 29 2 1",
    "0 0 30 jan-mar,oct *",
    "15 10 * jan,jul *",
    "0 0 1 1 *",
    "0 0 1 */3 *",
    "0 0 * feb-apr tue",
    "0 0 1-7 * mon",
    "59 23 31 12 *",
    "0 0 28-31 * *",
    "0,30 9-17 * * 1-5",
    "* * * * * *",
    "*/10 * * * * *",
    "0 */5 * * * 15,45",
    "30 2 * * * 10-20/5",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
]

CRONITER_STARTS = [utc(2024, 1, 1), utc(2025, 2, 28, 23, 59, 59), utc(2026, 6, 15, 13, 37, 11)]


def croniter_fires(expr: str, start: datetime, count: int) -> list[datetime]:
    # implement_cron_bug makes croniter apply Vixie's "a day field starting with * is
    # unrestricted" rule, which cronie follows; without it "*/2" in day-of-month means OR.
    it = croniter(expr, start, implement_cron_bug=True)
    return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]


def ours(expr: str, start: datetime, count: int) -> list[datetime]:
    # croniter's get_next is strictly after its start; ours is at or after "now".
    return as_utc(fires(CrontabTrigger(expr), start + timedelta(seconds=1), count))


@pytest.mark.parametrize("expr", FIXED_EXPRESSIONS)
@pytest.mark.parametrize("start", CRONITER_STARTS, ids=str)
def test_matches_croniter_on_fixed_list(expr: str, start: datetime) -> None:
    assert ours(expr, start, 50) == croniter_fires(expr, start, 50)


def _random_part(rng: random.Random, low: int, high: int, names: list[str] | None) -> str:
    def value(lo: int = low, hi: int = high) -> str:
        n = rng.randint(lo, hi)
        if names and rng.random() < 0.3 and n - low < len(names):
            return names[n - low]
        return str(n)

    kind = rng.choice(["value", "range", "range_step", "star_step", "start_step"])
    step = rng.randint(1, max(1, (high - low) // 2 + 1))
    if kind == "value":
        return value()
    if kind == "star_step":
        return f"*/{step}"
    if kind == "start_step":
        return f"{value()}/{step}"
    # Ranges with equal ends are left out: croniter widens "5-5" to the whole field.
    a = rng.randint(low, high - 1)
    b = rng.randint(a + 1, high)
    span = f"{value(a, a)}-{value(b, b)}"
    return span if kind == "range" else f"{span}/{step}"


def _random_field(rng: random.Random, low: int, high: int, names: list[str] | None = None) -> str:
    if rng.random() < 0.35:
        return "*"
    return ",".join(_random_part(rng, low, high, names) for _ in range(rng.randint(1, 3)))


def random_expressions(count: int, seed: int = 20260329) -> list[str]:
    rng = random.Random(seed)
    months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
    out: list[str] = []
    while len(out) < count:
        # Day-of-week stays in 0-6 here: how croniter reads ranges and steps ending at 7
        # differs from cronie (it folds 7 into 0 and wraps), which is checked separately.
        fields = [
            _random_field(rng, 0, 59),
            _random_field(rng, 0, 23),
            _random_field(rng, 1, 31),
            _random_field(rng, 1, 12, months),
            _random_field(rng, 0, 6, days),
        ]
        if rng.random() < 0.25:
            fields.append(_random_field(rng, 0, 59))
        expr = " ".join(fields)
        try:
            parse_crontab(expr)
        except CronError:
            continue  # e.g. day 31 only in 30-day months: never fires, refused
        out.append(expr)
    return out


@pytest.mark.parametrize("expr", random_expressions(300))
def test_matches_croniter_on_random_expressions(expr: str) -> None:
    for start in CRONITER_STARTS:
        assert ours(expr, start, 50) == croniter_fires(expr, start, 50), expr


# --- crontab semantics, explicitly ------------------------------------------------------------


def test_weekday_1_is_monday() -> None:
    result = fires(CrontabTrigger("0 8 * * 1"), utc(2026, 1, 1), 10)
    assert all(t.weekday() == 0 and (t.hour, t.minute) == (8, 0) for t in result)
    assert result[0] == utc(2026, 1, 5, 8)


def test_weekdays_1_to_5_are_monday_to_friday() -> None:
    result = fires(CrontabTrigger("0 9 * * 1-5"), utc(2026, 1, 1), 30)
    assert {t.weekday() for t in result} == {0, 1, 2, 3, 4}
    assert len({t.date() for t in result}) == 30


def test_day_of_month_and_weekday_are_or() -> None:
    result = fires(CrontabTrigger("0 0 1,15 * 5"), utc(2026, 1, 1), 60)
    assert all(t.day in (1, 15) or t.weekday() == 4 for t in result)
    assert {t.day for t in result if t.weekday() != 4} == {1, 15}
    assert any(t.weekday() == 4 and t.day not in (1, 15) for t in result)
    # 2026-01-01 is a Thursday, the 2nd a Friday.
    assert result[:3] == [utc(2026, 1, 1), utc(2026, 1, 2), utc(2026, 1, 9)]


def test_star_step_day_of_month_is_and_like_cronie() -> None:
    # "*/2" starts with "*", so (as in cronie) the day must match both fields.
    result = fires(CrontabTrigger("0 0 */2 * 1"), utc(2026, 1, 1), 20)
    assert all(t.weekday() == 0 and t.day % 2 == 1 for t in result)


def test_first_of_month() -> None:
    result = fires(CrontabTrigger("0 6 1 * *"), utc(2026, 1, 1), 12)
    assert result == [utc(2026, m, 1, 6) for m in range(1, 13)]


def test_sunday_is_0_and_7() -> None:
    start = utc(2026, 1, 1)
    sundays = fires(CrontabTrigger("0 0 * * 0"), start, 10)
    assert fires(CrontabTrigger("0 0 * * 7"), start, 10) == sundays
    assert fires(CrontabTrigger("0 0 * * sun"), start, 10) == sundays
    assert all(t.weekday() == 6 for t in sundays)
    assert parse_crontab("0 0 * * 0").weekdays == parse_crontab("0 0 * * 7").weekdays == {0}


def test_weekday_range_ending_at_sunday() -> None:
    # cronie reads "fri-sun" as 5-7.
    assert parse_crontab("0 0 * * fri-sun").weekdays == {5, 6, 0}
    assert parse_crontab("0 0 * * 5-7").weekdays == {5, 6, 0}


def test_parsed_fields() -> None:
    expr = parse_crontab("*/20 9-17/4 1,15 jan,JUL mon-wed")
    assert isinstance(expr, CronExpression)
    assert expr.minutes == {0, 20, 40}
    assert expr.hours == {9, 13, 17}
    assert expr.days == {1, 15}
    assert expr.months == {1, 7}
    assert expr.weekdays == {1, 2, 3}
    assert expr.seconds == {0}
    assert expr.dom_restricted and expr.dow_restricted
    assert not expr.has_seconds
    assert expr.text == "*/20 9-17/4 1,15 jan,JUL mon-wed"


def test_equal_range_is_one_value() -> None:
    # cronie: "5-5" is 5. (croniter widens it to the whole field.)
    assert parse_crontab("5-5 * * * *").minutes == {5}


def test_start_step_runs_to_field_end() -> None:
    assert parse_crontab("50/4 * * * *").minutes == {50, 54, 58}
    assert parse_crontab("0 0 * * 1/2").weekdays == {1, 3, 5}


def test_six_fields_seconds_last() -> None:
    expr = parse_crontab("0 12 * * * 30")
    assert expr.has_seconds and expr.seconds == {30}
    assert fires(CrontabTrigger("0 12 * * * 30"), utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 12, 0, 30),
        utc(2026, 1, 2, 12, 0, 30),
    ]


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_macros(macro: str, expanded: str) -> None:
    start = utc(2026, 3, 3, 3, 3)
    assert fires(CrontabTrigger(macro), start, 5) == fires(CrontabTrigger(expanded), start, 5)


def test_leap_day_and_monday_is_fast_and_correct() -> None:
    result = fires(CrontabTrigger("0 0 29 2 *"), utc(2026, 1, 1), 3)
    assert result == [utc(2028, 2, 29), utc(2032, 2, 29), utc(2036, 2, 29)]
    result = fires(CrontabTrigger("0 0 29 2 1"), utc(2026, 1, 1), 5)
    assert result == [utc(2026, 2, d) for d in (2, 9, 16, 23)] + [utc(2027, 2, 1)]


# --- DST --------------------------------------------------------------------------------------


def test_fixed_time_in_skipped_hour_runs_at_the_change_berlin() -> None:
    # 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00Z; 02:30 does not exist.
    trigger = CrontabTrigger("30 2 * * *", "Europe/Berlin")
    result = as_utc(fires(trigger, utc(2026, 3, 28, 12), 3))
    assert result == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]


def test_fixed_time_in_repeated_hour_runs_once_berlin() -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00Z; 02:30 happens at 00:30Z and 01:30Z.
    trigger = CrontabTrigger("30 2 * * *", "Europe/Berlin")
    result = as_utc(fires(trigger, utc(2026, 10, 24, 12), 3))
    assert result == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]


def test_fixed_time_started_inside_second_pass_waits_for_next_day() -> None:
    trigger = CrontabTrigger("30 2 * * *", "Europe/Berlin")
    assert trigger.get_next_fire_time(None, utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 1, 30)


def test_fixed_time_new_york() -> None:
    # 2026-03-08: 02:00 EST becomes 03:00 EDT at 07:00Z.
    trigger = CrontabTrigger("30 2 * * *", "America/New_York")
    result = as_utc(fires(trigger, utc(2026, 3, 7, 12), 3))
    assert result == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]
    # 2026-11-01: 02:00 EDT becomes 01:00 EST at 06:00Z; 01:30 happens twice, runs once.
    trigger = CrontabTrigger("30 1 * * *", "America/New_York")
    result = as_utc(fires(trigger, utc(2026, 10, 31, 12), 3))
    assert result == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)]


def test_fixed_times_merging_at_the_change_fire_once() -> None:
    # 02:00 is skipped and runs at 03:00 CEST, the same instant as the 03:00 fire: one fire.
    trigger = CrontabTrigger("0 1-3 * * *", "Europe/Berlin")
    result = as_utc(fires_between(trigger, utc(2026, 3, 28, 22), utc(2026, 3, 29, 22)))
    assert result == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1)]
    result = as_utc(fires_between(trigger, utc(2026, 10, 24, 22), utc(2026, 10, 25, 22)))
    assert result == [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)]


def test_fixed_time_skipped_seconds_collapse_at_the_change() -> None:
    # 01:59:59 CET fires, then 02:59:59 (skipped) runs exactly at the change, 1 s later.
    trigger = CrontabTrigger("59 1,2 * * * 59", "Europe/Berlin")
    result = as_utc(fires(trigger, utc(2026, 3, 29), 3))
    assert result == [
        utc(2026, 3, 29, 0, 59, 59),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 23, 59, 59),
    ]


def test_hourly_berlin_spring_forward() -> None:
    trigger = CrontabTrigger("0 * * * *", "Europe/Berlin")
    result = fires_between(trigger, utc(2026, 3, 28, 23), utc(2026, 3, 29, 3))
    assert as_utc(result) == [utc(2026, 3, 28, 23)] + [utc(2026, 3, 29, h) for h in (0, 1, 2)]
    assert [t.hour for t in result] == [0, 1, 3, 4]  # no 02:00 local: it does not exist


def test_hourly_berlin_fall_back_fires_in_both_passes() -> None:
    trigger = CrontabTrigger("0 * * * *", "Europe/Berlin")
    result = fires_between(trigger, utc(2026, 10, 24, 23), utc(2026, 10, 25, 3))
    assert as_utc(result) == [utc(2026, 10, 24, 23)] + [utc(2026, 10, 25, h) for h in (0, 1, 2)]
    assert [t.hour for t in result] == [1, 2, 2, 3]
    assert [t.utcoffset() for t in result][1:3] == [timedelta(hours=2), timedelta(hours=1)]


def test_quarter_hourly_new_york_fall_back_keeps_real_interval() -> None:
    trigger = CrontabTrigger("*/15 * * * *", "America/New_York")
    result = as_utc(fires_between(trigger, utc(2026, 11, 1, 4), utc(2026, 11, 1, 8)))
    assert result == [utc(2026, 11, 1, 4) + timedelta(minutes=15 * i) for i in range(16)]


def test_quarter_hourly_new_york_spring_forward_skips_the_missing_hour() -> None:
    trigger = CrontabTrigger("*/15 * * * *", "America/New_York")
    result = fires_between(trigger, utc(2026, 3, 8, 5), utc(2026, 3, 8, 9))
    # Real time never stops, so the fires stay 15 minutes apart; 02:xx local never shows.
    assert as_utc(result) == [utc(2026, 3, 8, 5) + timedelta(minutes=15 * i) for i in range(16)]
    assert all(t.hour != 2 for t in result)


def test_wildcard_minute_in_fixed_hour_follows_the_clock() -> None:
    # cronie counts a job as fixed-time only if neither minute nor hour starts with "*".
    trigger = CrontabTrigger("*/20 2 * * *", "Europe/Berlin")
    spring = as_utc(fires_between(trigger, utc(2026, 3, 28, 22), utc(2026, 3, 29, 22)))
    assert spring == []
    fall = as_utc(fires_between(trigger, utc(2026, 10, 24, 22), utc(2026, 10, 25, 22)))
    assert fall == [utc(2026, 10, 25, h, m) for h in (0, 1) for m in (0, 20, 40)]


def test_every_second_through_both_changes_is_strictly_one_second_apart() -> None:
    trigger = CrontabTrigger("* * * * * *", "Europe/Berlin")
    for start in (utc(2026, 3, 29, 0, 30), utc(2026, 10, 25, 0, 30)):
        result = as_utc(fires(trigger, start, 7200))
        assert result == [start + timedelta(seconds=i) for i in range(7200)]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize(
    "expr", ["30 2 * * *", "0 * * * *", "*/15 * * * *", "0 1-3 * * *", "*/7 1-3 * * * */20"]
)
def test_strictly_increasing_around_both_changes(zone: str, expr: str) -> None:
    trigger = CrontabTrigger(expr, zone)
    for start, end in ((utc(2026, 3, 1), utc(2026, 4, 1)), (utc(2026, 10, 20), utc(2026, 11, 10))):
        result = as_utc(fires_between(trigger, start, end))
        assert result
        assert all(a < b for a, b in pairwise(result))


# --- trigger contract -------------------------------------------------------------------------


def test_is_an_apscheduler_trigger_returning_aware_times_in_its_zone() -> None:
    trigger = CrontabTrigger("0 8 * * 1", "Europe/Berlin")
    assert isinstance(trigger, BaseTrigger)
    fire = trigger.get_next_fire_time(None, utc(2026, 1, 1))
    assert fire is not None
    assert fire.tzinfo is BERLIN
    assert (fire.hour, fire.minute) == (8, 0)
    assert fire == utc(2026, 1, 5, 7)


def test_accepts_tzinfo_and_defaults_to_utc() -> None:
    assert CrontabTrigger("0 0 * * *").get_next_fire_time(None, utc(2026, 1, 1, 1)) == utc(
        2026, 1, 2
    )
    trigger = CrontabTrigger("0 0 * * *", NEW_YORK)
    assert trigger.get_next_fire_time(None, utc(2026, 1, 1)) == utc(2026, 1, 1, 5)


def test_now_on_a_fire_time_fires_now_and_microseconds_round_up() -> None:
    trigger = CrontabTrigger("* * * * *")
    assert trigger.get_next_fire_time(None, utc(2026, 1, 1, 0, 1)) == utc(2026, 1, 1, 0, 1)
    now = utc(2026, 1, 1, 0, 1) + timedelta(microseconds=1)
    assert trigger.get_next_fire_time(None, now) == utc(2026, 1, 1, 0, 2)


def test_previous_fire_time_follows_apscheduler_contract() -> None:
    trigger = CrontabTrigger("*/5 * * * *")
    previous = utc(2026, 1, 1, 0, 5)
    # Search starts just after the previous fire ...
    assert trigger.get_next_fire_time(previous, FAR) == utc(2026, 1, 1, 0, 10)
    # ... or at "now" if that is earlier (clock went back), like APScheduler's CronTrigger.
    assert trigger.get_next_fire_time(previous, utc(2026, 1, 1)) == utc(2026, 1, 1)


def test_start_and_end_date() -> None:
    trigger = CrontabTrigger(
        "0 12 * * *",
        "Europe/Berlin",
        start_date=datetime(2026, 5, 1),  # naive: read in the trigger's zone
        end_date=datetime(2026, 5, 3, 12, tzinfo=BERLIN),
    )
    result = fires(trigger, utc(2026, 1, 1), 10)
    assert result == [datetime(2026, 5, d, 12, tzinfo=BERLIN) for d in (1, 2, 3)]
    assert trigger.get_next_fire_time(None, utc(2026, 6, 1)) is None


def test_pickle_round_trip() -> None:
    trigger = CrontabTrigger(
        "0 8 * * 1", "Europe/Berlin", start_date=utc(2026, 1, 1), end_date=utc(2027, 1, 1)
    )
    state = trigger.__getstate__()
    assert state["version"] == 1
    copy = pickle.loads(pickle.dumps(trigger))
    assert copy == trigger
    assert copy.expression == trigger.expression
    assert fires(copy, utc(2026, 3, 1), 60) == fires(trigger, utc(2026, 3, 1), 60)
    assert str(copy) == str(trigger)


def test_newer_pickle_version_is_refused() -> None:
    trigger = CrontabTrigger("0 8 * * 1")
    state = trigger.__getstate__() | {"version": 2}
    with pytest.raises(ValueError, match="version 2"):
        CrontabTrigger.__new__(CrontabTrigger).__setstate__(state)


def test_str_and_repr() -> None:
    trigger = CrontabTrigger("0 8 * * 1", "Europe/Berlin")
    assert str(trigger) == "crontab[0 8 * * 1, tz=Europe/Berlin]"
    assert repr(trigger) == "<CrontabTrigger ('0 8 * * 1', timezone='Europe/Berlin')>"
    assert str(CrontabTrigger("@daily")) == "crontab[@daily, tz=UTC]"


def test_ten_thousand_seconds() -> None:
    trigger = CrontabTrigger("* * * * * *")
    start = utc(2026, 12, 31, 23)
    result = fires(trigger, start, 10_000)
    assert len(result) == 10_000
    assert result[0] == start
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(result))


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "bad cron expression '61 * * * *': minute '61' is out of range 0-59"),
        ("* 24 * * *", "hour '24' is out of range 0-23"),
        ("0 0 0 * *", "day-of-month '0' is out of range 1-31"),
        ("0 0 * 13 *", "month '13' is out of range 1-12"),
        ("0 0 * * 8", "day-of-week '8' is out of range 0-7"),
        ("0 0 * * * 60", "second '60' is out of range 0-59"),
        ("* * * *", "bad cron expression '* * * *': expected 5 fields (or 6 with seconds), got 4"),
        ("* * * * * * *", "expected 5 fields (or 6 with seconds), got 7"),
        ("", "expected 5 fields (or 6 with seconds), got 0"),
        ("0 0 * * mnd", "unknown day name 'mnd'"),
        ("0 0 * foo *", "unknown month name 'foo'"),
        ("*/0 * * * *", "minute '*/0': step must be a positive number"),
        ("*/x * * * *", "step must be a positive number"),
        ("*/ * * * *", "step must be a positive number"),
        ("5-2 * * * *", "minute range '5-2' runs backwards"),
        ("1,,2 * * * *", "minute '1,,2' has an empty list item"),
        ("x * * * *", "minute 'x' is not a number"),
        ("0 jan * * *", "hour 'jan' is not a number"),
        ("-1 * * * *", "minute '-1' is missing a number"),
        ("0 0 L * *", "day-of-month 'L' is not a number"),
        ("0 0 * * 1#2", "day-of-week '1#2' is not a number"),
        ("0 0 30 2 *", "day-of-month '30' never occurs in month '2', so it would never run"),
        ("0 0 31 4,6,9,11 *", "day-of-month '31' never occurs"),
        ("@reboot", "@reboot is not supported"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
    ],
)
def test_error_messages(expr: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse_crontab(expr)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(CronError):
        CrontabTrigger(expr)


def test_impossible_day_is_fine_when_weekday_can_fire() -> None:
    # Day-of-month and day-of-week are OR'ed here, so Mondays in February still fire.
    assert parse_crontab("0 0 30 2 1").days == {30}


def test_not_a_string() -> None:
    with pytest.raises(CronError, match="expected a string"):
        parse_crontab(5)  # type: ignore[arg-type]


def test_unknown_time_zone() -> None:
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        CrontabTrigger("* * * * *", "Mars/Olympus")
