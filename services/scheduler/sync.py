"""Bring the jobstore and ``cronwork_schedules`` in line with schedules.yaml.

Run by a new leader before it fires anything. An unchanged schedule keeps its
stored ``next_run_time``, so fires that came due while no one led are caught up
instead of being recomputed away (DESIGN invariant 3). Only a change to *when*
a schedule fires (trigger, zone, start/end) recomputes it.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import Engine, delete

from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.store.engines import upsert
from services.store.tables import schedules
from services.timeutil import utcnow

logger = logging.getLogger(__name__)

PLACEHOLDER = "services.scheduler.fenced:job_placeholder"


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    rescheduled: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def sync_jobs(scheduler: BaseScheduler, specs: dict[str, ScheduleSpec]) -> SyncReport:
    """Add new, reschedule changed, remove deleted jobs. The scheduler must be started paused.

    All writes go in one transaction: a first deploy of 10,000 schedules would otherwise
    be 10,000 commits while the new leader fires nothing.
    """
    report = SyncReport()
    now = datetime.now(UTC)
    existing = {job.id: job for job in scheduler.get_jobs()}
    write: list[Job] = []
    for spec in specs.values():
        if not spec.enabled:
            continue
        fingerprint = spec.trigger_fingerprint()
        job = existing.pop(spec.name, None)
        if job is not None and job.kwargs.get("fingerprint") == fingerprint:
            report.kept.append(spec.name)
            continue
        trigger = build_trigger(spec)
        first = trigger.get_next_fire_time(None, now)
        if first is None:
            logger.warning("%s will never fire again (past its end or its one-off time)", spec.name)
            if job is not None:
                existing[spec.name] = job  # removed below
            continue
        write.append(
            Job(
                scheduler,
                id=spec.name,
                name=spec.name,
                func=PLACEHOLDER,
                trigger=trigger,
                executor="default",
                args=(),
                kwargs={"fingerprint": fingerprint},
                misfire_grace_time=None,
                coalesce=False,
                max_instances=1,
                next_run_time=first,
            )
        )
        (report.rescheduled if job is not None else report.added).append(spec.name)
    report.removed = list(existing)
    _write_jobs(scheduler._lookup_jobstore("default"), write, report.removed)
    logger.info(
        "schedules synced: %d added, %d rescheduled, %d kept, %d removed",
        len(report.added),
        len(report.rescheduled),
        len(report.kept),
        len(report.removed),
        extra={"action": "schedules_synced"},
    )
    return report


def _write_jobs(jobstore: BaseJobStore, jobs: list[Job], removed: list[str]) -> None:
    """Upsert ``jobs`` and delete ``removed`` in one transaction (one by one elsewhere)."""
    if not isinstance(jobstore, SQLAlchemyJobStore):
        for job in jobs:
            try:
                jobstore.update_job(job)
            except JobLookupError:
                jobstore.add_job(job)
        for job_id in removed:
            jobstore.remove_job(job_id)
        return
    table = jobstore.jobs_t
    rows = [
        {
            "id": job.id,
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": pickle.dumps(job.__getstate__(), jobstore.pickle_protocol),
        }
        for job in jobs
    ]
    with jobstore.engine.begin() as conn:
        gone = removed + [r["id"] for r in rows]
        for start in range(0, len(gone), 1000):
            conn.execute(table.delete().where(table.c.id.in_(gone[start : start + 1000])))
        if rows:
            conn.execute(table.insert(), rows)


def sync_schedule_rows(engine: Engine, specs: dict[str, ScheduleSpec]) -> None:
    """Store each schedule's definition (for status, the worker's overlap lock); keep ``paused``."""
    now = utcnow()
    with engine.begin() as conn:
        if specs:
            rows = [schedule_row(spec, now) for spec in specs.values()]
            stmt = upsert(engine, schedules.name).values(rows)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    k: stmt.excluded[k]
                    for k in ("actor", "trigger", "timezone", "spec", "fingerprint", "updated_at")
                },
            )
            conn.execute(stmt)
        conn.execute(delete(schedules).where(schedules.c.name.not_in(list(specs))))


def schedule_row(spec: ScheduleSpec, now: datetime, *, paused: bool = False) -> dict[str, object]:
    return {
        "name": spec.name,
        "actor": spec.actor,
        "trigger": spec.describe_trigger(),
        "timezone": spec.timezone,
        "spec": spec.to_json(),
        "fingerprint": spec.fingerprint(),
        "paused": paused,
        "paused_at": now if paused else None,
        "created_at": now,
        "updated_at": now,
    }
