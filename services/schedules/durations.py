"""Durations as users write them in schedules.yaml: ``500ms``, ``30s``, ``1h30m``, ``1d``."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

from services.errors import DurationError

#: Unit suffix → seconds.
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: object) -> timedelta:
    """Parse ``text`` into a positive timedelta; raise DurationError saying what is wrong."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise DurationError(f"duration must be a string like '30s', '15m' or '1h', not {text!r}")
    value = text.strip().replace(" ", "")
    if not value:
        raise DurationError("duration is empty")
    if value.startswith("-"):
        raise DurationError(f"duration {text!r} is negative")
    pos = 0
    seconds = 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value) or pos == 0:
        raise DurationError(
            f"bad duration {text!r}: use a number and a unit (ms, s, m, h, d, w), "
            "e.g. '30s' or '1h30m'"
        )
    if seconds <= 0:
        raise DurationError(f"duration {text!r} must be greater than zero")
    try:
        delta = timedelta(seconds=seconds)
    except OverflowError:
        raise DurationError(f"duration {text!r} is too long") from None
    if delta % timedelta(milliseconds=1):
        # format_duration (and so describe_trigger, status, alerts) speaks whole milliseconds.
        raise DurationError(f"duration {text!r} is finer than a millisecond")
    return delta


@lru_cache(maxsize=1024)  # status describes every schedule's trigger twice; few distinct
def format_duration(delta: timedelta) -> str:
    """The shortest canonical spelling of ``delta`` (inverse of parse_duration)."""
    ms = round(delta.total_seconds() * 1000)
    if ms % 1000:
        return f"{ms}ms"
    secs = ms // 1000
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            out.append(f"{secs // size}{unit}")
            secs %= size
    return "".join(out) or "0s"
