"""One schedule whose trigger fails at run time stops only itself (issue 9.3).

``check`` refuses such values now; these schedules are built directly, as a value
``check`` let through would arrive. On main each of them failed the leader's sync or
tick for every schedule: a healthy one beside it fired 0 times.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from services.broker import sender_broker
from services.constants import LEASE_KEY
from services.scheduler.broken import BrokenSchedules
from services.scheduler.fenced import FireHandler
from services.scheduler.jobstore import ScheduleJobStore
from services.scheduler.lease import RedisLease
from services.scheduler.service import SchedulerService
from services.scheduler.sync import sync_jobs
from services.schedules.triggers import build_trigger
from services.store.engines import make_engine
from services.store.incidents import IncidentStore
from services.store.views import status
from services.vocabulary import IncidentKind
from services.watch.alerter import Alerter
from tests.integration.conftest import fire_rows, make_settings, spec
from tests.waiting import wait_for

#: Fails at sync: its next fire time is past year 9999.
HUGE = spec("huge", every=timedelta(days=3_000_000))
#: Fails at the tick: its one fire time is in year 1 (before year 1 in UTC).
YEAR_ONE = spec(
    "year-one",
    trigger="at",
    every=None,
    at=datetime(1, 1, 1, 3, tzinfo=timezone(timedelta(hours=5))),
)


def broken_incidents(engine: Engine) -> list[Any]:
    return [
        i
        for i in IncidentStore(engine).list(include_resolved=True)
        if i.kind == IncidentKind.BROKEN
    ]


@pytest.fixture
def service(
    pg_url: str, redis_prefix: str, redis_client: redis.Redis
) -> Iterator[SchedulerService]:
    settings = make_settings(redis_prefix, instance_id="leader", lease_ttl=3.0)
    engine = make_engine(pg_url)
    broker = sender_broker(settings)
    specs = {s.name: s for s in (spec("tick", catchup="all"), HUGE, YEAR_ONE)}
    lease = RedisLease(redis_client, f"{redis_prefix}:{LEASE_KEY}", settings.lease_ttl, "leader")
    svc = SchedulerService(settings, engine, broker, specs, lease)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    yield svc
    svc.stop()
    thread.join(timeout=10)
    svc.alerter.join(5)
    broker.close()
    engine.dispose()


def test_broken_schedules_are_skipped_and_reported_while_the_others_fire(
    service: SchedulerService, engine: Engine
) -> None:
    wait_for(lambda: service.leading, timeout=10, what="leadership")
    wait_for(lambda: len(fire_rows(engine, "tick")) >= 3, timeout=10, what="three ticks")
    assert service.health()[0]  # liveness: the process is fine; the incident says the rest

    found = wait_for(lambda: len(broken_incidents(engine)) == 2, timeout=5, what="incidents")
    assert found
    incidents = {i.schedule: i for i in broken_incidents(engine)}
    assert set(incidents) == {"huge", "year-one"}
    for incident in incidents.values():
        assert incident.resolved_at is None and incident.count == 1
        assert "error" in incident.details
    assert "year 10183 is out of range" in incidents["huge"].details["error"]
    # Their jobs are gone (the tick does not retry them every second); ticks go on.
    stored = ScheduleJobStore(engine, {}).stored()
    assert set(stored) == {"tick"}
    assert fire_rows(engine, "huge") == [] and fire_rows(engine, "year-one") == []
    # `cronwork status` still reports every schedule (on main it failed as a whole).
    rows = {s["name"]: s for s in status(engine, service.specs, 3.0)["schedules"]}
    assert rows["huge"]["broken"] and rows["tick"]["broken"] is None
    assert rows["tick"]["next_run"] is not None


class FailsLater(IntervalTrigger):  # type: ignore[misc]
    """Works at sync, then raises in the tick, as a trigger with a run-time bug would."""

    calls = 0

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        FailsLater.calls += 1
        if FailsLater.calls > 1:
            raise OverflowError("date value out of range")
        return super().get_next_fire_time(previous, now)


def test_the_tick_skips_a_trigger_that_raises_once_reported(engine: Engine) -> None:
    tick, bad = spec("tick"), spec("bad")
    triggers = {
        "tick": build_trigger(tick),
        "bad": FailsLater(seconds=1, start_date=datetime(2026, 1, 1, tzinfo=UTC)),
    }
    reported: list[tuple[str, str]] = []
    handler = FireHandler(
        engine,
        None,
        None,
        {"tick": tick, "bad": bad},
        triggers,  # type: ignore[arg-type]
        on_broken=lambda name, error: reported.append((name, error)),
    )
    now = datetime.now(UTC)
    past = now - timedelta(seconds=2)
    assert handler.plan("bad", past, now) == (None, [])  # removed from the jobstore
    next_run, reqs = handler.plan("tick", past, now)
    assert next_run is not None and reqs  # the healthy one plans its fires
    assert reported == [("bad", "OverflowError: date value out of range")]


def test_sync_leaves_out_a_trigger_that_raises_and_removes_its_job(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    tick = spec("tick")
    store = ScheduleJobStore(engine, {})
    reported: list[str] = []
    sync_jobs(
        store,
        {"tick": tick, "huge": spec("huge")},
        {"tick": build_trigger(tick), "huge": build_trigger(spec("huge"))},
    )
    assert set(store.stored()) == {"tick", "huge"}
    # The next deploy makes "huge" unbuildable: its job goes, the other stays.
    specs = {"tick": tick, "huge": HUGE}
    report = sync_jobs(
        store,
        specs,
        {name: build_trigger(s) for name, s in specs.items()},
        on_broken=lambda name, error: reported.append(name),
    )
    assert reported == ["huge"] and report.kept == ["tick"] and report.removed == ["huge"]
    assert set(store.stored()) == {"tick"}
    # A schedule whose trigger could not even be built (absent from triggers) goes too.
    report = sync_jobs(store, specs, {})
    assert report.removed == ["tick"]


def test_a_sync_that_removes_every_schedule_warns(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # 9.4: main logged this at INFO, like any other sync.
    store = ScheduleJobStore(engine, {})
    specs = {s.name: s for s in (spec("a"), spec("b"))}
    with caplog.at_level(logging.INFO, logger="services.scheduler.sync"):
        sync_jobs(store, specs, {n: build_trigger(s) for n, s in specs.items()})
        sync_jobs(store, {}, {})
    first, second = (r for r in caplog.records if r.name == "services.scheduler.sync")
    assert first.levelno == logging.INFO
    assert second.levelno == logging.WARNING
    assert "every stored schedule removed" in second.getMessage()


def test_a_leader_that_finds_a_schedule_sound_resolves_its_broken_incident(
    engine: Engine, redis_prefix: str
) -> None:
    alerter = Alerter.from_settings(make_settings(redis_prefix), {}, lambda: engine)
    first = BrokenSchedules(alerter)
    first("nightly", "ValueError: year 10183 is out of range")
    first("nightly", "ValueError: again")  # reported once per leadership
    first("other", "OverflowError: x")
    alerter.join(5)
    [nightly, _other] = sorted(broken_incidents(engine), key=lambda i: i.schedule)
    assert (nightly.count, nightly.subject) == (1, "ValueError: year 10183 is out of range")

    # The next leader builds "nightly" fine (it was fixed) and "other" still fails.
    second = BrokenSchedules(alerter)
    second("other", "OverflowError: x")
    second.settle()
    alerter.join(5)
    state = {i.schedule: i.resolved_at is not None for i in broken_incidents(engine)}
    assert state == {"nightly": True, "other": False}
