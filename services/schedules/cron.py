"""Crontab expressions with the semantics users know from cronie, as an APScheduler 3 trigger.

APScheduler 3's ``CronTrigger.from_crontab`` is not crontab: weekday 0 is Monday there, 7 is
refused, day-of-month and day-of-week are ANDed, and fixed-time jobs fire twice when clocks go
back. This module parses the expression itself and searches for fire times in the local wall
clock of an IANA zone, then maps wall times to instants the way cronie does across DST changes.

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
import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import astimezone, convert_to_datetime, datetime_repr

from services.errors import CronError

__all__ = [
    "DAY_NAMES",
    "MACROS",
    "MONTH_NAMES",
    "CronExpression",
    "CrontabTrigger",
    "parse_crontab",
]

_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)

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
        object.__setattr__(self, "_sorted", tuple(tuple(sorted(v)) for v in order))

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


def parse_crontab(expr: str) -> CronExpression:
    """Parse a crontab expression; raise :class:`CronError` naming the field and value at fault."""
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
    weekdays = frozenset(d % 7 for d in weekdays)
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
    return frozenset(values)


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


class CrontabTrigger(BaseTrigger):
    """Fires when the wall clock in ``timezone`` matches a crontab expression.

    Across DST changes it behaves like cronie:

    * fixed-time jobs (neither minute nor hour starts with ``*``) fire once per matching wall
      time: if that time is skipped when clocks go forward they fire at the change itself, and
      if it repeats when clocks go back they fire on its first occurrence only;
    * other jobs follow the real clock: no fires in a skipped hour, fires in both passes of a
      repeated hour.
    """

    __slots__ = ("end_date", "expression", "start_date", "timezone")

    def __init__(
        self,
        expr: str,
        timezone: str | tzinfo = "UTC",
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> None:
        self.expression = parse_crontab(expr)
        self.timezone = _zone(timezone)
        self.start_date: datetime | None = convert_to_datetime(
            start_date, self.timezone, "start_date"
        )
        self.end_date: datetime | None = convert_to_datetime(end_date, self.timezone, "end_date")

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # Where the search starts is copied from APScheduler's CronTrigger, so the scheduler's
        # catch-up logic (which calls this repeatedly) behaves the same as with its own triggers.
        now = _aware(now, self.timezone)
        if previous_fire_time is not None:
            previous = _aware(previous_fire_time, self.timezone).astimezone(UTC)
            start = min(now.astimezone(UTC), previous + _MICROSECOND)
            if start == previous:
                start += _MICROSECOND
        elif self.start_date is not None:
            start = max(now.astimezone(UTC), self.start_date.astimezone(UTC))
        else:
            start = now.astimezone(UTC)
        if start.microsecond:
            start += timedelta(microseconds=1_000_000 - start.microsecond)

        if self.expression.fixed_time:
            fire = self._next_fixed(start)
        else:
            fire = self._next_repeating(start)
        if fire is None or (self.end_date is not None and fire > self.end_date):
            return None
        return fire.astimezone(self.timezone)

    def _next_repeating(self, start: datetime) -> datetime | None:
        """First instant >= ``start`` (UTC) whose wall-clock reading matches."""
        tz = self.timezone
        while True:
            wall = _wall(start, tz)
            first, second = _instants(wall, tz)
            if first < second and start == first:
                # In the first pass of a repeated hour: walls before ``wall`` come round again
                # once it ends, so only look up to its end here, then resume in the second pass.
                change = _transition(first, second, tz)
                match = self.expression.next_wall_time(wall)
                if match is not None and match < _wall(change - _SECOND, tz) + _SECOND:
                    return _instants(match, tz)[0]
                start = change
                continue
            match = self.expression.next_wall_time(wall)
            if match is None:
                return None
            first, second = _instants(match, tz)
            if first <= second:
                return first if first >= start else second
            # The clock never shows ``match`` (skipped hour): carry on from the change.
            start = _transition(second, first, tz)

    def _next_fixed(self, start: datetime) -> datetime | None:
        """Earliest instant >= ``start`` (UTC) of a matching wall time, cronie style.

        Each wall time maps to one instant (its first occurrence, or the moment clocks jump
        forward if it is skipped). That map never decreases, so the answer belongs to the
        first matching wall time at or after the earliest wall time mapping to >= ``start``.
        """
        tz = self.timezone
        wall = _wall(start, tz)
        first, second = _instants(wall, tz)
        if first < second and start == second:
            # Second pass of a repeated hour: its wall times already mapped to the first pass.
            wall = _wall(_transition(first, second, tz) - _SECOND, tz) + _SECOND
        elif (start - _SECOND).astimezone(tz).utcoffset() != start.astimezone(tz).utcoffset():
            # Clocks changed exactly at ``start``; if they jumped forward, the skipped wall
            # times all map to ``start`` itself and must still be considered.
            wall = min(wall, _wall(start - _SECOND, tz) + _SECOND)
        match = self.expression.next_wall_time(wall)
        if match is None:
            return None
        first, second = _instants(match, tz)
        return first if first <= second else _transition(second, first, tz)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "version": 1,
            "expr": self.expression.text,
            "timezone": self.timezone,
            "start_date": self.start_date,
            "end_date": self.end_date,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) > 1:
            raise ValueError(
                f"Got serialized data for version {state['version']} of "
                f"{type(self).__name__}, but only version 1 can be handled"
            )
        self.expression = parse_crontab(state["expr"])
        self.timezone = _zone(state["timezone"])
        self.start_date = state["start_date"]
        self.end_date = state["end_date"]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CrontabTrigger):
            return NotImplemented
        return self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.expression.text, _zone_name(self.timezone)))

    def __str__(self) -> str:
        return f"crontab[{self.expression.text}, tz={_zone_name(self.timezone)}]"

    def __repr__(self) -> str:
        options = [repr(self.expression.text), f"timezone='{_zone_name(self.timezone)}'"]
        if self.start_date:
            options.append(f"start_date={datetime_repr(self.start_date)!r}")
        if self.end_date:
            options.append(f"end_date={datetime_repr(self.end_date)!r}")
        return f"<{type(self).__name__} ({', '.join(options)})>"


def _zone(value: str | tzinfo) -> tzinfo:
    if isinstance(value, str):
        try:
            return UTC if value == "UTC" else ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"unknown time zone '{value}'") from None
    zone: tzinfo = astimezone(value)
    return zone


def _zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)


def _aware(value: datetime, tz: tzinfo) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    """The naive wall-clock reading in ``tz`` at ``instant``."""
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def _instants(wall: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """The UTC instants for ``wall`` read with fold=0 and with fold=1 (PEP 495).

    Equal for an ordinary time. In a repeated hour the first is earlier (the clock shows
    ``wall`` twice); in a skipped hour the first is later (it never shows it), and the clock
    change lies between the two.
    """
    return (
        wall.replace(tzinfo=tz, fold=0).astimezone(UTC),
        wall.replace(tzinfo=tz, fold=1).astimezone(UTC),
    )


def _transition(before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The clock change in (before, after]: the first whole second with ``after``'s offset.

    zoneinfo does not expose transitions, so bisect; tzdata changes fall on whole seconds.
    """
    offset = after.astimezone(tz).utcoffset()
    low, high = math.floor(before.timestamp()), math.ceil(after.timestamp())
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == offset:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)
