"""Bring the jobs table and ``cronwork_schedules`` in line with schedules.yaml.

Run by a new leader before it fires anything. An unchanged schedule keeps its stored
``next_run_time``, so fires that came due while no one led are caught up instead of
being recomputed away (docs/design.md, catch-up). Only a change to *when* a schedule
fires (trigger, zone, start/end: its trigger fingerprint) recomputes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.triggers.base import BaseTrigger

from services.scheduler.broken import check_fire_time, describe
from services.scheduler.jobstore import ScheduleJobStore, StoredJob
from services.schedules.spec import ScheduleSpec

logger = logging.getLogger(__name__)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    rescheduled: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def sync_jobs(
    store: ScheduleJobStore,
    specs: Mapping[str, ScheduleSpec],
    triggers: Mapping[str, BaseTrigger],
    now: datetime | None = None,
    on_broken: Callable[[str, str], None] | None = None,
) -> SyncReport:
    """Add new, reschedule changed, remove deleted jobs, all in one transaction.

    One transaction: a first deploy of 10,000 schedules would otherwise be 10,000 commits
    while the new leader fires nothing. A schedule without a trigger in ``triggers`` (it
    could not be built) or whose trigger raises is left out and its job removed: one
    broken schedule must not keep every replica from leading (services/scheduler/broken.py).
    """
    report = SyncReport()
    now = now or datetime.now(UTC)
    existing = store.stored()
    write: list[StoredJob] = []
    for spec in specs.values():
        trigger = triggers.get(spec.name)
        if not spec.enabled or trigger is None:
            continue
        fingerprint = spec.trigger_fingerprint()
        job = existing.pop(spec.name, None)
        if job is not None and job.fingerprint == fingerprint:
            report.kept.append(spec.name)
            continue
        try:
            first = trigger.get_next_fire_time(None, now)
            check_fire_time(first)
        except Exception as exc:
            if on_broken is not None:
                on_broken(spec.name, describe(exc))
            if job is not None:
                existing[spec.name] = job  # removed below
            continue
        if first is None:
            logger.warning("%s will never fire again (past its end or its one-off time)", spec.name)
            if job is not None:
                existing[spec.name] = job  # removed below
            continue
        write.append(StoredJob(spec.name, first, fingerprint))
        (report.rescheduled if job is not None else report.added).append(spec.name)
    report.removed = list(existing)
    store.replace(write, report.removed)
    # Every stored schedule gone is what a truncated or wrong file looks like: say so.
    emptied = report.removed and not (report.added or report.rescheduled or report.kept)
    logger.log(
        logging.WARNING if emptied else logging.INFO,
        "schedules synced: %d added, %d rescheduled, %d kept, %d removed%s",
        len(report.added),
        len(report.rescheduled),
        len(report.kept),
        len(report.removed),
        " (every stored schedule removed: nothing is left to fire)" if emptied else "",
        extra={"action": "schedules_synced"},
    )
    return report
