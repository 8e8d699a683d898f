"""Crontab expressions with the semantics users know from cronie, as an APScheduler 3 trigger.

APScheduler 3's ``CronTrigger.from_crontab`` is not crontab: weekday 0 is Monday there, 7 is
refused, day-of-month and day-of-week are ANDed, and fixed-time jobs fire twice when clocks go
back. services/schedules/cron_expr.py parses the expression (the dialect is described there) and
searches for matching times in the local wall clock of an IANA zone; this module maps wall times
to instants the way cronie does across DST changes.

``CrontabTrigger`` stays in this module: it is the class a pickled trigger names.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import astimezone, convert_to_datetime, datetime_repr

from services.errors import CronError
from services.schedules.cron_expr import (
    DAY_NAMES,
    MACROS,
    MONTH_NAMES,
    CronExpression,
    parse_crontab,
)

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
