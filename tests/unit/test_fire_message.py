"""services.fire_message: what a fire's Dramatiq message carries, written and read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.constants import FIRE_OPTION
from services.fire_message import FireOptions, build_message, jitter_ms
from services.schedules.spec import ScheduleSpec
from services.store.fence import request
from services.vocabulary import FireKind, FireStatus

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def spec(**kw: object) -> ScheduleSpec:
    base: dict[str, object] = {
        "name": "nightly-report",
        "actor": "build_report",
        "trigger": "cron",
        "cron": "0 2 * * *",
    }
    base.update(kw)
    return ScheduleSpec(**base)  # type: ignore[arg-type]


def test_message_carries_everything_to_send_it() -> None:
    s = spec(
        queue="reports",
        args=(1, "x"),
        kwargs={"limit": 10},
        max_retries=5,
        min_backoff=timedelta(seconds=2),
        max_backoff=timedelta(minutes=10),
        time_limit=timedelta(minutes=5),
        overlap="skip",
    )
    m = build_message(s, T, FireKind.CATCHUP)
    assert json.loads(json.dumps(m)) == m  # stored as JSON in the fire row
    assert m["queue_name"] == "reports"
    assert m["actor_name"] == "build_report"
    assert m["args"] == [1, "x"]
    assert m["kwargs"] == {"limit": 10}
    assert m["options"] == {
        "max_retries": 5,
        "min_backoff": 2_000,
        "max_backoff": 600_000,
        "time_limit": 300_000,
        FIRE_OPTION: {
            "schedule": "nightly-report",
            "scheduled_for": "2026-03-10T12:00:00Z",
            "kind": "catchup",
            "overlap": "skip",
        },
    }
    assert m["jitter_ms"] == 0


def test_defaults_and_no_time_limit_unless_set() -> None:
    m = build_message(spec(), T, FireKind.SCHEDULED)
    options = m["options"]
    assert "time_limit" not in options
    assert options["max_retries"] == 3
    assert options["min_backoff"] == 15_000
    assert options["max_backoff"] == 3_600_000
    assert options[FIRE_OPTION]["kind"] == "scheduled"
    assert options[FIRE_OPTION]["overlap"] == "allow"
    assert m["args"] == [] and m["kwargs"] == {}


def test_zero_retries_is_kept() -> None:
    assert build_message(spec(max_retries=0), T, FireKind.MANUAL)["options"]["max_retries"] == 0


def test_scheduled_for_is_utc_whatever_the_zone() -> None:
    local = T.astimezone(ZoneInfo("America/New_York"))
    m = build_message(spec(timezone="America/New_York"), local, FireKind.SCHEDULED)
    assert m["options"][FIRE_OPTION]["scheduled_for"] == "2026-03-10T12:00:00Z"


def test_message_does_not_share_mutable_state_with_the_spec() -> None:
    s = spec(kwargs={"tags": ["a"]})
    m = build_message(s, T, FireKind.SCHEDULED)
    m["kwargs"]["extra"] = 1
    assert s.kwargs == {"tags": ["a"]}


def test_request_wraps_the_message() -> None:
    r = request(spec(), T, FireKind.SCHEDULED)
    assert (r.schedule, r.scheduled_for, r.kind, r.status) == (
        "nightly-report",
        T,
        "scheduled",
        "pending",
    )
    assert r.message == build_message(spec(), T, FireKind.SCHEDULED)
    assert request(spec(), T, FireKind.CATCHUP, FireStatus.SKIPPED).status == "skipped"


def test_jitter_is_zero_without_jitter() -> None:
    assert jitter_ms(spec(), T) == 0


def test_jitter_is_deterministic_per_schedule_and_time() -> None:
    s = spec(jitter=timedelta(seconds=30))
    a = jitter_ms(s, T)
    # Another replica (another process, the same inputs) computes the same delay …
    assert jitter_ms(spec(jitter=timedelta(seconds=30)), T) == a
    # … also given the same instant in another zone.
    assert jitter_ms(s, T.astimezone(ZoneInfo("Asia/Tokyo"))) == a
    assert build_message(s, T, FireKind.SCHEDULED)["jitter_ms"] == a
    # It varies with the time and the schedule, so fires spread out.
    by_time = {jitter_ms(s, T + timedelta(minutes=i)) for i in range(50)}
    by_name = {jitter_ms(spec(name=f"s{i}", jitter=timedelta(seconds=30)), T) for i in range(50)}
    assert len(by_time) > 40 and len(by_name) > 40


@pytest.mark.parametrize(
    "jitter", [timedelta(milliseconds=1), timedelta(seconds=1), timedelta(minutes=5)]
)
def test_jitter_is_within_range(jitter: timedelta) -> None:
    s = spec(jitter=jitter)
    limit = int(jitter.total_seconds() * 1000)
    values = [jitter_ms(s, T + timedelta(seconds=i)) for i in range(500)]
    assert all(0 <= v < limit for v in values)
    if limit > 100:
        # Spread over the range, not bunched at one end.
        assert min(values) < limit // 4 and max(values) > limit * 3 // 4


def test_fire_options_read_back_what_was_written() -> None:
    local = T.astimezone(ZoneInfo("Europe/Berlin"))
    m = build_message(spec(overlap="skip"), local, FireKind.CATCHUP)
    fire = FireOptions.from_options(m["options"])
    assert fire == FireOptions("nightly-report", T, FireKind.CATCHUP, "skip")
    assert fire is not None and fire.scheduled_for.utcoffset() == timedelta(0)


def test_a_message_cronwork_did_not_send_has_no_fire_options() -> None:
    assert FireOptions.from_options({"max_retries": 3}) is None
    assert FireOptions.from_options({FIRE_OPTION: "not a mapping"}) is None
