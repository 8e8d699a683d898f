"""The dashboard's pure parts: cron in words, pause ends, sessions, charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.errors import TimeInputError
from services.schedules.describe import describe_cron, describe_trigger
from services.schedules.spec import ScheduleSpec
from services.timeutil import parse_until
from services.web.auth import Role, Tokens, issue_session, read_session
from services.web.charts import bar_chart, human_ms


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 8 * * 1", "At 08:00, only on Monday"),
        ("0 8 * * 7", "At 08:00, only on Sunday"),  # 7 is Sunday, as in crontab
        ("0 8 * * mon-fri", "At 08:00, Monday through Friday"),
        ("0 6 1 jan,JUL *", "At 06:00, on day 1 of the month, only in January and July"),
        ("@daily", "At 00:00"),
        ("@hourly", "Every hour"),
        # cronwork's seconds field comes LAST; cron-descriptor reads a sixth field first.
        ("*/10 * * * * 30", "At 30 seconds past the minute, every 10 minutes"),
        # Both day fields restricted: either one fires (cronie), and the words say "or".
        ("0 0 1,15 * 5", "At 00:00, on day 1 and 15 of the month, or on Friday"),
    ],
)
def test_cron_in_words(expr: str, words: str) -> None:
    assert describe_cron(expr) == words


@pytest.mark.parametrize("expr", ["0 0 */2 * 1", "0 0 1-7 * */2", "61 * * * *", "nonsense"])
def test_raw_expression_where_words_would_mislead_or_it_is_invalid(expr: str) -> None:
    # "*/2" in day-of-month makes cronie need BOTH days; cron-descriptor would say "or".
    assert describe_cron(expr) == expr


def test_every_and_at_in_words() -> None:
    every = ScheduleSpec(name="x", actor="a", trigger="every", every=timedelta(minutes=90))
    assert describe_trigger(every) == "Every 1h30m"
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert describe_trigger(ScheduleSpec(name="x", actor="a", trigger="at", at=at)).startswith(
        "Once, at 2026-12-01T09:00"
    )


def test_pause_ends_as_people_write_them() -> None:
    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert parse_until("2h", now) == now + timedelta(hours=2)
    assert parse_until("1d12h", now) == now + timedelta(days=1, hours=12)
    assert parse_until("2026-11-30T09:00:00Z", now) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    # Naive times are read in the schedule's zone (Berlin is UTC+1 in November).
    berlin = parse_until("2026-11-30T09:00", now, ZoneInfo("Europe/Berlin"))
    assert berlin == datetime(2026, 11, 30, 8, tzinfo=UTC)
    for bad, why in (
        ("yesterday", "bad time"),
        ("2020-01-01T00:00", "not in the future"),
        ("-5m", "bad time"),
        ("999999999d", "too far"),
    ):
        with pytest.raises(TimeInputError, match=why):
            parse_until(bad, now)


def test_sessions_are_signed_expire_and_follow_the_tokens() -> None:
    tokens = Tokens(admin="a" * 20, readonly="r" * 20, generated=False)
    assert tokens.role_of("a" * 20) == Role.ADMIN and tokens.role_of("r" * 20) == Role.READ
    assert tokens.role_of("a" * 19) is None and tokens.role_of("") is None
    cookie = issue_session(tokens, Role.ADMIN, "Alice <script>", now=1000.0)
    who = read_session(tokens, cookie, now=1001.0)
    assert who is not None and who.admin and who.who == "web:Alice script"
    assert who.csrf and who.csrf == read_session(tokens, cookie, now=1002.0).csrf  # type: ignore[union-attr]
    assert "a" * 20 not in cookie
    # Expired, tampered, or signed under another token: no session.
    assert read_session(tokens, cookie, now=1000.0 + 13 * 3600) is None
    data, sig = cookie.split(".")
    assert read_session(tokens, data + "x." + sig, now=1001.0) is None
    rotated = Tokens(admin="b" * 20, readonly="r" * 20, generated=False)
    assert read_session(rotated, cookie, now=1001.0) is None
    # Two sessions never share a CSRF token.
    other = read_session(tokens, issue_session(tokens, Role.ADMIN, "", now=1000.0), now=1001.0)
    assert other is not None and other.csrf != who.csrf and other.who == "web:admin"


def test_charts_scale_to_the_largest_value() -> None:
    recent = [
        {"id": 1, "scheduled_for": "t1", "status": "succeeded", "duration_ms": 500},
        {"id": 2, "scheduled_for": "t2", "status": "failed", "duration_ms": 2000},
        {"id": 3, "scheduled_for": "t3", "status": "running", "duration_ms": None},
    ]
    chart = bar_chart(recent, "duration_ms")
    assert chart is not None and chart.top == "2.0s"
    assert [b.fire_id for b in chart.bars] == [1, 2]
    assert chart.bars[1].height == chart.height and chart.bars[0].height == chart.height / 4
    assert bar_chart([], "duration_ms") is None
    assert [human_ms(v) for v in (None, 42, 1234, 95_000, 7_200_000)] == [
        "-",
        "42ms",
        "1.2s",
        "1m35s",
        "2h00m",
    ]
