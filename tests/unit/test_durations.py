"""services.schedules.durations: durations as users write them, and their canonical spelling."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.errors import DurationError
from services.schedules.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("1.5s", timedelta(milliseconds=1500)),
        ("0.1s", timedelta(milliseconds=100)),
        ("0.5h", timedelta(minutes=30)),
        ("90m", timedelta(minutes=90)),
        (" 30s ", timedelta(seconds=30)),
        ("1m 30s", timedelta(seconds=90)),
        ("1ms", timedelta(milliseconds=1)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-5s", "negative"),
        ("0s", "greater than zero"),
        ("0ms", "greater than zero"),
        ("0.0h", "greater than zero"),
        ("30", "use a number and a unit"),
        ("s", "use a number and a unit"),
        ("30x", "use a number and a unit"),
        ("30S", "use a number and a unit"),
        ("1e3s", "use a number and a unit"),
        ("+5s", "use a number and a unit"),
        ("5s garbage", "use a number and a unit"),
        ("h1", "use a number and a unit"),
        ("1.s", "use a number and a unit"),
        # Finer than the canonical spelling can say: refused instead of shown as "0s".
        ("0.5ms", "finer than a millisecond"),
        ("1.0005s", "finer than a millisecond"),
        # Too long for a timedelta: a DurationError (a file:line problem), not a crash.
        ("99999999999d", "too long"),
        ("9" * 400 + "s", "too long"),
        (30, "must be a string"),
        (1.5, "must be a string"),
        (None, "must be a string"),
        (True, "must be a string"),
        (["30s"], "must be a string"),
    ],
)
def test_parse_errors_say_what_is_wrong(value: object, says: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert says in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(seconds=30), "30s"),
        (timedelta(minutes=15), "15m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(weeks=2), "14d"),
        (timedelta(hours=25), "1d1h"),
        (timedelta(0), "0s"),
    ],
)
def test_format(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text


@pytest.mark.parametrize(
    "text",
    ["500ms", "1500ms", "1ms", "30s", "1h30m", "90m", "2w", "1d2h3m4s", "0.25s", "1.5h", "36h"],
)
def test_format_is_the_inverse_of_parse(text: str) -> None:
    delta = parse_duration(text)
    canonical = format_duration(delta)
    assert parse_duration(canonical) == delta
    assert format_duration(parse_duration(canonical)) == canonical
