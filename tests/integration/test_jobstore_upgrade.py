"""Stored jobs survive an upgrade: every schedule keeps its next run, no overdue fire is lost.

``tests/fixtures/jobstore_0_1_0.json`` holds ``apscheduler_jobs`` rows exactly as cronwork
0.1.0 wrote them (APScheduler's pickled Job, naming ``services.scheduler:job_placeholder``
and ``services.cron.CrontabTrigger``, modules this release no longer has). The stock
jobstore would delete such rows on first read, and with them every overdue fire.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select

from services.scheduler.jobstore import ScheduleJobStore, decode_state
from services.scheduler.lease import LocalLease
from services.scheduler.service import SchedulerService
from services.scheduler.sync import sync_jobs
from services.schedules.loader import parse_schedules
from services.schedules.triggers import build_trigger
from services.settings import Settings
from services.store.migrate import upgrade
from services.store.tables import apscheduler_jobs
from services.timeutil import as_utc
from tests.conftest import scratch_database
from tests.integration.conftest import fire_rows
from tests.waiting import wait_for

FIXTURE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "jobstore_0_1_0.json").read_text()
)
SPECS = parse_schedules(FIXTURE["schedules_yaml"]).schedules
TRIGGERS = {name: build_trigger(spec) for name, spec in SPECS.items()}


def aligned_before(name: str, moment: datetime) -> datetime:
    """The schedule's last fire time at or before ``moment``."""
    trigger = TRIGGERS[name]
    t = trigger.get_next_fire_time(None, moment - timedelta(days=1))
    assert t is not None
    while True:
        nxt = trigger.get_next_fire_time(t, t)
        if nxt is None or nxt > moment:
            return t
        t = nxt


def write_old_release_rows(engine: Engine, overdue: dict[str, datetime]) -> dict[str, float]:
    """Insert the fixture's rows; ``overdue`` moves some next run times into the past."""
    rows = []
    for row in FIXTURE["rows"]:
        next_run = row["next_run_time"]
        if row["id"] in overdue:
            next_run = overdue[row["id"]].timestamp()
        rows.append(
            {
                "id": row["id"],
                "next_run_time": next_run,
                "job_state": base64.b64decode(row["job_state"]),
            }
        )
    with engine.begin() as conn:
        conn.execute(apscheduler_jobs.insert(), rows)
    return {r["id"]: r["next_run_time"] for r in rows}


@pytest.fixture(params=["postgres", "sqlite"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at schema 0002 (release 0.1.0), empty."""
    if request.param == "postgres":
        with scratch_database("cw_upgrade") as url:
            upgrade(url, "0002")
            yield url
    else:
        url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
        upgrade(url, "0002")
        yield url


def test_the_fixture_is_what_0_1_0_wrote() -> None:
    """Guards the fixture itself: pickles naming modules that are gone, one per schedule."""
    assert {r["id"] for r in FIXTURE["rows"]} == set(SPECS)
    for row in FIXTURE["rows"]:
        raw = base64.b64decode(row["job_state"])
        assert b"services.scheduler" in raw and decode_state(raw) is None
    # The trigger fingerprint is the contract between releases: unchanged schedules keep
    # their stored next run only while it is computed the same way.
    assert FIXTURE["specs_fingerprints"] == {n: s.trigger_fingerprint() for n, s in SPECS.items()}


def test_upgrade_keeps_every_next_run_and_catches_up_what_was_overdue(
    old_database: str,
) -> None:
    now = datetime.now(UTC)
    overdue = {
        "every-15m": aligned_before("every-15m", now - timedelta(minutes=20)),
        "with-seconds": aligned_before("with-seconds", now - timedelta(seconds=25)),
    }
    engine = create_engine(old_database)
    before = write_old_release_rows(engine, overdue)

    upgrade(old_database)

    with engine.connect() as conn:
        after = {r.id: r for r in conn.execute(select(apscheduler_jobs))}
    assert {name: r.next_run_time for name, r in after.items()} == before
    for name, r in after.items():
        assert decode_state(r.job_state) == SPECS[name].trigger_fingerprint(), name

    # The new release's sync sees every schedule as unchanged: nothing is recomputed.
    report = sync_jobs(ScheduleJobStore(engine, TRIGGERS), SPECS, TRIGGERS)
    assert sorted(report.kept) == sorted(SPECS)
    assert report.added == report.rescheduled == report.removed == []

    # And a leader catches up the overdue fires at their own scheduled times.
    settings = Settings(database_url=old_database, instance_id="upgraded", http_port=0)
    service = SchedulerService(
        settings, engine, _stub_broker(), SPECS, LocalLease("upgraded", settings.lease_ttl)
    )
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        for name, when in overdue.items():
            wait_for(
                lambda name=name, when=when: _fired_at(engine, name, when),
                timeout=15,
                what=f"the overdue fire of {name} at {when}",
            )
    finally:
        service.stop()
        thread.join(15)
    # Schedules that were not due keep exactly the next run 0.1.0 stored.
    with engine.connect() as conn:
        kept = {r.id: r.next_run_time for r in conn.execute(select(apscheduler_jobs))}
    for name in ("berlin-nightly", "weekdays", "once"):
        assert kept[name] == before[name], name
    engine.dispose()


def _fired_at(engine: Engine, name: str, when: datetime) -> bool:
    """A fire row at exactly ``when``: run, or recorded as skipped by the catch-up policy."""
    times = {as_utc(r.scheduled_for) for r in fire_rows(engine, name)}
    return as_utc(when) in times


def _stub_broker() -> Any:
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker()
    broker.declare_queue("default")
    return broker
