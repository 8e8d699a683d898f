"""Bring the jobstore and ``cronwork_schedules`` in line with schedules.yaml.

Run by a new leader before it fires anything. An unchanged schedule keeps its
stored ``next_run_time``, so fires that came due while no one led are caught up
instead of being recomputed away (DESIGN invariant 3). Only a change to *when*
a schedule fires (trigger, zone, start/end) recomputes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine, delete

from services.db import upsert
from services.models import schedules
from services.spec import ScheduleSpec
from services.timeutil import utcnow
from services.triggers import build_trigger

logger = logging.getLogger(__name__)

PLACEHOLDER = "services.scheduler:job_placeholder"


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    rescheduled: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def sync_jobs(scheduler: BaseScheduler, specs: dict[str, ScheduleSpec]) -> SyncReport:
    """Add new, reschedule changed, remove deleted jobs. The scheduler must be started paused."""
    report = SyncReport()
    now = datetime.now(UTC)
    existing = {job.id: job for job in scheduler.get_jobs()}
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
                scheduler.remove_job(spec.name)
            continue
        scheduler.add_job(
            PLACEHOLDER,
            trigger=trigger,
            id=spec.name,
            name=spec.name,
            kwargs={"fingerprint": fingerprint},
            next_run_time=first,
            replace_existing=True,
        )
        (report.rescheduled if job is not None else report.added).append(spec.name)
    for name in existing:
        scheduler.remove_job(name)
        report.removed.append(name)
    logger.info(
        "schedules synced: %d added, %d rescheduled, %d kept, %d removed",
        len(report.added),
        len(report.rescheduled),
        len(report.kept),
        len(report.removed),
        extra={"action": "schedules_synced"},
    )
    return report


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
