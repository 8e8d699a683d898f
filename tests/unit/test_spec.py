"""services.schedules.spec.ScheduleSpec: its JSON form and the two fingerprints sync relies on."""

from __future__ import annotations

import dataclasses
import json
import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.schedules.spec import ScheduleSpec


def cron_spec(**changes: Any) -> ScheduleSpec:
    base = ScheduleSpec(
        name="weekly-digest",
        actor="send_weekly_digest",
        trigger="cron",
        cron="0 8 * * 1",
        timezone="Europe/Berlin",
        args=(1, "x"),
        kwargs={"limit": 10, "tags": ["a", "b"]},
        jitter=timedelta(seconds=30),
        time_limit=timedelta(minutes=5),
    )
    return replace(base, **changes)


def test_to_json_is_json_safe_and_complete() -> None:
    spec = cron_spec(
        start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2027, 1, 1, 12, tzinfo=UTC)
    )
    data = spec.to_json()
    assert json.loads(json.dumps(data)) == data  # no default= needed
    assert data["name"] == "weekly-digest"
    assert data["cron"] == "0 8 * * 1"
    assert data["timezone"] == "Europe/Berlin"
    assert data["args"] == [1, "x"]
    assert data["kwargs"] == {"limit": 10, "tags": ["a", "b"]}
    assert data["jitter"] == 30.0
    assert data["time_limit"] == 300.0
    assert data["min_backoff"] == 15.0 and data["max_backoff"] == 3600.0
    assert data["catchup_window"] == 3600.0
    assert data["start"] == "2026-01-01T00:00:00+00:00"
    assert data["end"] == "2027-01-01T12:00:00+00:00"
    assert data["every"] is None and data["at"] is None
    assert "file" not in data and "line" not in data


def test_file_and_line_are_not_identity() -> None:
    a = cron_spec()
    b = replace(a, file="other.yaml", line=42)
    assert a == b
    assert a.fingerprint() == b.fingerprint()
    assert a.trigger_fingerprint() == b.trigger_fingerprint()


def test_fingerprints_are_stable_and_short() -> None:
    a, b = cron_spec(), cron_spec()
    assert a.fingerprint() == b.fingerprint()
    assert a.trigger_fingerprint() == b.trigger_fingerprint()
    assert len(a.fingerprint()) == 16 and len(a.trigger_fingerprint()) == 16
    int(a.fingerprint(), 16)
    # Same content, kwargs built in another order: same fingerprint.
    c = cron_spec(kwargs={"tags": ["a", "b"], "limit": 10})
    assert c.fingerprint() == a.fingerprint()


@pytest.mark.parametrize(
    "changes",
    [
        {"queue": "reports"},
        {"actor": "other_actor"},
        {"args": (2,)},
        {"kwargs": {"limit": 11, "tags": ["a", "b"]}},
        {"max_retries": 0},
        {"min_backoff": timedelta(seconds=1)},
        {"max_backoff": timedelta(minutes=5)},
        {"time_limit": None},
        {"max_runtime": timedelta(hours=1)},
        {"overlap": "skip"},
        {"catchup": "all"},
        {"catchup_window": timedelta(hours=2)},
        {"jitter": timedelta(seconds=5)},
        {"enabled": False},
    ],
    ids=lambda c: next(iter(c)),
)
def test_non_timing_change_changes_fingerprint_only(changes: dict[str, Any]) -> None:
    a = cron_spec()
    b = cron_spec(**changes)
    assert b.fingerprint() != a.fingerprint()
    # Not when it fires: next_run_time (and so overdue runs) must survive this change.
    assert b.trigger_fingerprint() == a.trigger_fingerprint()


@pytest.mark.parametrize(
    "changes",
    [
        {"cron": "0 9 * * 1"},
        {"timezone": "UTC"},
        {"start": datetime(2026, 1, 1, tzinfo=UTC)},
        {"end": datetime(2030, 1, 1, tzinfo=UTC)},
        {"trigger": "every", "cron": None, "every": timedelta(minutes=5)},
        {"trigger": "at", "cron": None, "at": datetime(2026, 6, 1, tzinfo=UTC)},
    ],
    ids=lambda c: "-".join(c),
)
def test_timing_change_changes_both(changes: dict[str, Any]) -> None:
    a = cron_spec()
    b = cron_spec(**changes)
    assert b.fingerprint() != a.fingerprint()
    assert b.trigger_fingerprint() != a.trigger_fingerprint()


def test_every_interval_change_changes_trigger_fingerprint() -> None:
    a = ScheduleSpec(name="tick", actor="tick", trigger="every", every=timedelta(seconds=30))
    b = replace(a, every=timedelta(seconds=31))
    assert a.trigger_fingerprint() != b.trigger_fingerprint()
    assert replace(a, queue="q").trigger_fingerprint() == a.trigger_fingerprint()


def test_describe_trigger() -> None:
    assert cron_spec().describe_trigger() == "cron 0 8 * * 1"
    every = ScheduleSpec(name="t", actor="t", trigger="every", every=timedelta(minutes=90))
    assert every.describe_trigger() == "every 1h30m"
    at = ScheduleSpec(name="t", actor="t", trigger="at", at=datetime(2026, 6, 1, 8, tzinfo=UTC))
    assert at.describe_trigger() == "at 2026-06-01T08:00:00+00:00"


# ------------------------------------------------ from_values (the loader's constructor)


def test_from_values_builds_what_the_constructor_builds() -> None:
    values = {
        "name": "weekly-digest",
        "actor": "send_weekly_digest",
        "trigger": "cron",
        "cron": "0 8 * * 1",
        "timezone": "Europe/Berlin",
        "args": (1, "x"),
        "jitter": timedelta(seconds=30),
        "file": "x.yaml",
        "line": 7,
    }
    built, expected = ScheduleSpec.from_values(values), ScheduleSpec(**values)
    assert built == expected and repr(built) == repr(expected)
    assert (built.file, built.line) == ("x.yaml", 7)
    assert hash(built.alerts) == hash(expected.alerts)
    # Each spec gets its own kwargs dict, as the default_factory gives.
    assert ScheduleSpec.from_values(values).kwargs is not built.kwargs
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.name = "other"  # type: ignore[misc]
    # Slots, no dict (a scheduler holds every spec); `cronwork scheduler` pickles them.
    assert not hasattr(built, "__dict__")
    again = pickle.loads(pickle.dumps(built))
    assert again == built and (again.file, again.line) == ("x.yaml", 7)


def test_from_values_refuses_what_the_constructor_refuses() -> None:
    with pytest.raises(TypeError, match="unexpected ScheduleSpec fields: colour"):
        ScheduleSpec.from_values({"name": "a", "actor": "b", "trigger": "at", "colour": 1})
    with pytest.raises(TypeError, match="missing ScheduleSpec fields: actor"):
        ScheduleSpec.from_values({"name": "a", "trigger": "at"})


def test_spec_has_no_post_init_for_from_values_to_skip() -> None:
    # from_values sets the slots directly: a __post_init__ added later would be skipped.
    assert not hasattr(ScheduleSpec, "__post_init__")


def test_trigger_fingerprint_is_the_digest_of_to_jsons_trigger_keys() -> None:
    """Read from the fields directly, it must still equal what older releases stored."""
    from services.schedules.spec import TRIGGER_KEYS, fingerprint_of

    for spec in (
        cron_spec(),
        cron_spec(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2027, 1, 1, tzinfo=UTC)),
        cron_spec(trigger="every", cron=None, every=timedelta(minutes=90)),
    ):
        data = spec.to_json()
        assert spec.trigger_fingerprint() == fingerprint_of(
            {k: v for k, v in data.items() if k in TRIGGER_KEYS}
        )
        assert spec.fingerprint() == fingerprint_of(data)
