"""UTC helpers: every stored and compared instant is aware and in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Attach UTC to naive values (SQLite returns them so) and convert aware ones."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as the CLI's JSON prints it."""
    value = as_utc(value)
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def parse_until(text: str, now: datetime, zone: tzinfo = UTC) -> datetime:
    """When a pause ends, as people write it: a duration from now (``2h``, ``1d12h``) or an
    ISO 8601 time (naive means in ``zone``). It must lie in the future."""
    from services.errors import DurationError, TimeInputError
    from services.schedules.durations import parse_duration

    value = text.strip()
    try:
        when = now + parse_duration(value)
    except OverflowError:
        raise TimeInputError(f"{value!r} is too far away") from None
    except DurationError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise TimeInputError(
                f"bad time {value!r}: give an ISO 8601 time (2026-12-01T09:00) "
                "or a duration from now (30m, 2h, 1d)"
            ) from None
        when = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)
    try:
        when = when.astimezone(UTC)
    except OverflowError:
        raise TimeInputError(f"{value!r} is out of range") from None
    if when <= now:
        raise TimeInputError(f"{iso(when)} is not in the future")
    return when
