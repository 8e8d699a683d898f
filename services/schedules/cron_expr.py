"""Crontab expressions with the semantics users know from cronie: the parser and the
wall-clock search. services/schedules/cron.py turns wall times into instants (the trigger).

Dialect (cronie's, plus two extensions croniter also has):

* ``minute hour day-of-month month day-of-week``, optionally a sixth field for seconds (last,
  as croniter does; without it seconds = {0}).
* ``*``, ``a``, ``a-b``, ``a,b``, ``*/n``, ``a-b/n``, and ``a/n`` meaning ``a-max/n``;
  ``jan``..``dec`` and ``sun``..``sat`` in any case; day-of-week 0 and 7 are both Sunday.
* ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``.
* Vixie's day rule: if neither day field starts with ``*``, a day matching EITHER fires;
  otherwise a day must match both (so ``*/2`` counts as unrestricted for this rule).
"""

from __future__ import annotations

import calendar
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from services.errors import CronError

__all__ = ["DAY_NAMES", "MACROS", "MONTH_NAMES", "CronExpression", "parse_crontab"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Spelled out rather than taken from calendar.month_abbr, which follows the locale.
MONTH_NAMES = {
    name: i
    for i, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
#: Longest each month can be (February in leap years), to refuse dates that never happen.
_MAX_MONTH_DAYS = {m: calendar.monthrange(2000, m)[1] for m in range(1, 13)}  # 2000: leap
#: Any date a valid expression allows recurs within one 400-year Gregorian cycle.
_SEARCH_YEARS = 400


_Complaint = Callable[[str], CronError]
T = TypeVar("T")


@dataclass(frozen=True)
class _Spec:
    name: str
    low: int
    high: int
    #: Upper end of ``*`` and ``a/n``; only differs for day-of-week, where 7 is an alias.
    span_high: int
    names: dict[str, int] | None = None
    noun: str = ""


_SECONDS = _Spec("second", 0, 59, 59)
_MINUTES = _Spec("minute", 0, 59, 59)
_HOURS = _Spec("hour", 0, 23, 23)
_DOM = _Spec("day-of-month", 1, 31, 31)
_MONTHS = _Spec("month", 1, 12, 12, MONTH_NAMES, "month")
# a/n on weekdays ends at Saturday (6), as croniter does; cronie has no a/n form at all, and
# ending at 7 would make "1/2" (Mon, Wed, Fri) silently include Sunday.
_DOW = _Spec("day-of-week", 0, 7, 6, DAY_NAMES, "day")


@dataclass(frozen=True)
class CronExpression:
    """An immutable, parsed crontab expression. Build it with :func:`parse_crontab`."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    #: 0 = Sunday .. 6 = Saturday (7 is folded into 0).
    weekdays: frozenset[int]
    #: Vixie's notion: the field does not start with ``*``. Only when both are restricted
    #: is a day matching either field enough.
    dom_restricted: bool
    dow_restricted: bool
    has_seconds: bool
    #: Neither minute nor hour starts with ``*`` (cronie's test). Such jobs run once on DST
    #: days; the others follow the real clock.
    fixed_time: bool
    _sorted: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        order = (self.months, self.hours, self.minutes, self.seconds)
        object.__setattr__(self, "_sorted", tuple(_shared(tuple(sorted(v))) for v in order))

    def __str__(self) -> str:
        return self.text

    def _day_ok(self, day: int, weekday: int) -> bool:
        in_dom = day in self.days
        in_dow = weekday in self.weekdays
        if self.dom_restricted and self.dow_restricted:
            return in_dom or in_dow
        return in_dom and in_dow

    def _next_day(self, year: int, month: int, day: int) -> int | None:
        # calendar counts Monday as 0; cron counts Sunday as 0, hence the +1 folded into +day.
        first_weekday, length = calendar.monthrange(year, month)
        for d in range(day, length + 1):
            if self._day_ok(d, (first_weekday + d) % 7):
                return d
        return None

    def next_wall_time(self, start: datetime) -> datetime | None:
        """The earliest naive wall-clock time at or after ``start`` (whole seconds) that matches.

        Jumps field by field: a field with no further value carries into the next larger one,
        and everything smaller restarts at its minimum; out-of-range values just make the
        lookup fail, which is the carry.
        """
        months, hours, minutes, seconds = self._sorted
        y, mo, d = start.year, start.month, start.day
        h, mi, s = start.hour, start.minute, start.second
        last_year = min(start.year + _SEARCH_YEARS, datetime.max.year)
        while y <= last_year:
            value = _next_in(months, mo)
            if value is None:
                y, mo, d, h, mi, s = y + 1, 1, 1, 0, 0, 0
                continue
            if value != mo:
                mo, d, h, mi, s = value, 1, 0, 0, 0
            value = self._next_day(y, mo, d)
            if value is None:
                mo, d, h, mi, s = mo + 1, 1, 0, 0, 0
                continue
            if value != d:
                d, h, mi, s = value, 0, 0, 0
            value = _next_in(hours, h)
            if value is None:
                d, h, mi, s = d + 1, 0, 0, 0
                continue
            if value != h:
                h, mi, s = value, 0, 0
            value = _next_in(minutes, mi)
            if value is None:
                h, mi, s = h + 1, 0, 0
                continue
            if value != mi:
                mi, s = value, 0
            value = _next_in(seconds, s)
            if value is None:
                mi, s = mi + 1, 0
                continue
            return datetime(y, mo, d, h, mi, value)
        return None


def _next_in(values: tuple[int, ...], start: int) -> int | None:
    i = bisect_left(values, start)
    return values[i] if i < len(values) else None


#: Parsed expressions by text, and every field value set and sorted tuple, shared: 10,000
#: schedules repeat a few hundred expressions, and a ``*`` minute field alone is a 60-entry
#: frozenset (tracemalloc: parsed expressions were the largest item of a 10,000-schedule
#: scheduler, built twice). CronExpression is immutable, so sharing is safe.
_PARSED: dict[str, CronExpression] = {}
_SHARED: dict[Any, Any] = {}
_CACHE_LIMIT = 100_000


def _shared(value: T) -> T:
    if len(_SHARED) >= _CACHE_LIMIT:
        return value
    return _SHARED.setdefault(value, value)


def parse_crontab(expr: str) -> CronExpression:
    """Parse a crontab expression; raise :class:`CronError` naming the field and value at fault."""
    if isinstance(expr, str):
        parsed = _PARSED.get(expr)
        if parsed is None:
            parsed = _parse_crontab(expr)
            if len(_PARSED) < _CACHE_LIMIT:
                _PARSED[expr] = parsed
        return parsed
    return _parse_crontab(expr)


def _parse_crontab(expr: str) -> CronExpression:
    if not isinstance(expr, str):
        raise CronError(f"bad cron expression: expected a string, got {type(expr).__name__}")
    text = " ".join(expr.split())

    def bad(message: str) -> CronError:
        return CronError(f"bad cron expression '{text}': {message}")

    body = text
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise bad("@reboot is not supported (there is no boot to run at)")
        if text.lower() not in MACROS:
            raise bad(f"unknown macro '{text}'")
        body = MACROS[text.lower()]
    tokens = body.split()
    if len(tokens) not in (5, 6):
        raise bad(f"expected 5 fields (or 6 with seconds), got {len(tokens)}")
    specs = (_MINUTES, _HOURS, _DOM, _MONTHS, _DOW, _SECONDS)
    minutes, hours, days, months, weekdays, *rest = (
        _parse_field(token, spec, bad) for token, spec in zip(tokens, specs, strict=False)
    )
    weekdays = _shared(frozenset(d % 7 for d in weekdays))
    dom_restricted = not tokens[2].startswith("*")
    dow_restricted = not tokens[4].startswith("*")
    if not (dom_restricted and dow_restricted) and not any(
        d <= _MAX_MONTH_DAYS[m] for m in months for d in days
    ):
        # With OR semantics the weekday side always fires; otherwise this never would.
        raise bad(
            f"day-of-month '{tokens[2]}' never occurs in month '{tokens[3]}', so it would never run"
        )
    return CronExpression(
        text=text,
        seconds=rest[0] if rest else frozenset({0}),
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        dom_restricted=dom_restricted,
        dow_restricted=dow_restricted,
        has_seconds=bool(rest),
        fixed_time=not (tokens[0].startswith("*") or tokens[1].startswith("*")),
    )


def _parse_field(token: str, spec: _Spec, bad: _Complaint) -> frozenset[int]:
    values: set[int] = set()
    for part in token.split(","):
        if not part:
            raise bad(f"{spec.name} '{token}' has an empty list item")
        values.update(_parse_part(part, spec, bad))
    return _shared(frozenset(values))


def _parse_part(part: str, spec: _Spec, bad: _Complaint) -> range:
    span, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
            raise bad(f"{spec.name} '{part}': step must be a positive number")
        step = int(step_text)
    if span == "*":
        low, high = spec.low, spec.span_high
    elif "-" in span:
        first, _, last = span.partition("-")
        low, high = _parse_value(first, part, spec, bad), _parse_value(last, part, spec, bad)
        if spec is _DOW and high == 0 < low:
            high = 7  # cronie reads "fri-sun" as 5-7
        if low > high:
            raise bad(f"{spec.name} range '{span}' runs backwards")
    else:
        low = _parse_value(span, part, spec, bad)
        high = spec.span_high if slash else low
    return range(low, high + 1, step)


def _parse_value(text: str, part: str, spec: _Spec, bad: _Complaint) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
    elif spec.names is not None and text.lower() in spec.names:
        return spec.names[text.lower()]
    elif spec.names is not None and text.isalpha():
        raise bad(f"unknown {spec.noun} name '{text}'")
    elif not text:
        raise bad(f"{spec.name} '{part}' is missing a number")
    else:
        raise bad(f"{spec.name} '{text}' is not a number")
    if not spec.low <= value <= spec.high:
        raise bad(f"{spec.name} '{text}' is out of range {spec.low}-{spec.high}")
    return value
