"""APScheduler 3, made crash-safe: fires are fenced in the database before a job's
``next_run_time`` moves.

Stock ``BackgroundScheduler._process_jobs`` advances ``next_run_time`` even when
submitting the job failed (the fire is lost), lets a jobstore error kill its thread
while the scheduler still claims to run, and drops fires later than
``misfire_grace_time``. ``FencedScheduler`` keeps APScheduler's jobstore, triggers
and wake-up loop and replaces only that one method.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import Engine, bindparam, select

from services.constants import ON_TIME_GRACE_SECONDS
from services.scheduler.catchup import plan_fires
from services.scheduler.dispatch import Dispatcher
from services.schedules.spec import ScheduleSpec
from services.store.fence import Fence, Fire, FireRequest, request
from services.store.tables import schedules

logger = logging.getLogger(__name__)

#: Longest sleep between two looks at the jobstore: pause/resume from the CLI and a
#: lost lease must take effect quickly even when no job is due for hours.
MAX_WAIT_SECONDS = 1.0
#: Wait after a database error before trying again (nothing advanced meanwhile).
RETRY_SECONDS = 1.0
#: Fence rows written per INSERT statement.
CLAIM_CHUNK = 500


def job_placeholder(**_: object) -> None:
    """The callable stored with each APScheduler job; never called (fires go through the fence)."""


class FireHandler:
    """Turns one due job into fence rows, and the won rows into messages."""

    def __init__(
        self,
        engine: Engine,
        fence: Fence,
        dispatcher: Dispatcher,
        specs: dict[str, ScheduleSpec],
    ) -> None:
        self.engine = engine
        self.fence = fence
        self.dispatcher = dispatcher
        self.specs = specs
        self.paused: set[str] = set()
        self.won: list[Fire] = []

    def refresh_paused(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schedules.c.name).where(schedules.c.paused.is_(True)))
            self.paused = {r.name for r in rows}

    def plan(self, job: Job, now: datetime) -> tuple[datetime | None, list[FireRequest]]:
        """The job's next run time (None: remove it) and the fence rows for its due fires."""
        spec = self.specs.get(job.id)
        if spec is None:
            logger.warning("job %s has no schedule any more; removing it", job.id)
            return None, []
        grace = timedelta(seconds=ON_TIME_GRACE_SECONDS)
        plan = plan_fires(
            job.trigger,
            job.next_run_time,
            now,
            policy=spec.catchup,
            window=max(spec.catchup_window, grace),
            grace=grace,
        )
        if spec.name in self.paused:
            return plan.next_run_time, []  # paused: time moves on, nothing fires
        reqs: list[FireRequest] = [request(spec, t, kind) for t, kind in plan.fire]
        reqs += [request(spec, t, "catchup", "skipped") for t in plan.skipped]
        reqs += [request(spec, t, "scheduled", "missed") for t in plan.missed]
        for r in reqs[len(plan.fire) :]:
            object.__setattr__(r, "error", _why_not_run(r.status, spec))
        if plan.missed or plan.missed_unrecorded:
            logger.error(
                "%s: %d fire(s) missed outside the %s catch-up window%s",
                spec.name,
                len(plan.missed) + plan.missed_unrecorded,
                spec.catchup_window,
                f" (at least {plan.missed_unrecorded} more not recorded one by one)"
                if plan.missed_unrecorded
                else "",
                extra={"action": "fires_missed", "schedule": spec.name},
            )
        return plan.next_run_time, reqs

    def claim(self, reqs: list[FireRequest]) -> None:
        """Write the fence rows, in chunks; keep the won ones for ``flush``."""
        for start in range(0, len(reqs), CLAIM_CHUNK):
            self.won.extend(self.fence.claim(reqs[start : start + CLAIM_CHUNK]))

    def flush(self) -> None:
        """Send what this tick won."""
        batch, self.won = self.won, []
        if batch:
            self.dispatcher.send(batch)


def _why_not_run(status: str, spec: ScheduleSpec) -> str:
    if status == "missed":
        return f"missed: later than the catch-up window ({spec.catchup_window})"
    return f"skipped: catchup {spec.catchup} runs only the newest late fire"


class FencedScheduler(BackgroundScheduler):
    def __init__(self, handler: FireHandler, may_fire: Callable[[], bool]) -> None:
        super().__init__(
            timezone=UTC,
            job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        )
        self.handler = handler
        self.may_fire = may_fire
        #: monotonic time of the last loop pass, for /healthz.
        self.last_tick = time.monotonic()

    def _process_jobs(self) -> float | None:
        self.last_tick = time.monotonic()
        # Not only when paused: shutdown() wakes the loop thread for one last pass after
        # setting STATE_STOPPED, and that pass must not fire (e.g. a scheduler started
        # paused whose sync failed, or one stepping down).
        if self.state != STATE_RUNNING:
            return None
        try:
            return self._process_due()
        except Exception:
            # Never let the loop thread die: log and look again shortly.
            logger.exception("scheduler loop error; retrying", extra={"action": "loop_error"})
            return RETRY_SECONDS

    def _process_due(self) -> float:
        jobstore: BaseJobStore = self._lookup_jobstore("default")
        if not self.may_fire():
            return MAX_WAIT_SECONDS
        now = datetime.now(UTC)
        due = jobstore.get_due_jobs(now)
        if due:
            self.handler.refresh_paused()
        try:
            # Three phases, each one round trip however many jobs are due (a burst of
            # thousands in one second): plan, fence every fire, then advance every job.
            # Fence first, then advance: a crash in between re-fences the same times,
            # which the unique rows turn into no-ops; nothing advances unfenced.
            advances: list[tuple[Job, datetime | None]] = []
            reqs: list[FireRequest] = []
            for job in due:
                next_run, job_reqs = self.handler.plan(job, now)
                advances.append((job, next_run))
                reqs += job_reqs
            if not self.may_fire():
                logger.warning("lease lost; not firing %d due job(s)", len(due))
                return MAX_WAIT_SECONDS
            self.handler.claim(reqs)
            _advance(jobstore, advances)
        finally:
            self.handler.flush()
        next_time = jobstore.get_next_run_time()
        if next_time is None:
            return MAX_WAIT_SECONDS
        wait = (next_time - datetime.now(UTC)).total_seconds()
        return min(max(wait, 0.0), MAX_WAIT_SECONDS)


def _advance(jobstore: BaseJobStore, advances: list[tuple[Job, datetime | None]]) -> None:
    """Move every job to its next run time (or remove it) in one transaction.

    APScheduler's ``update_job`` commits one job at a time; for a burst that is one
    round trip per job. This writes the same columns the same way (its ``jobs_t``
    table, ``pickle_protocol`` and ``engine`` are public attributes of
    SQLAlchemyJobStore), batched.
    """
    if not isinstance(jobstore, SQLAlchemyJobStore):  # other stores: one by one
        for job, next_run in advances:
            if next_run is None:
                jobstore.remove_job(job.id)
            else:
                job._modify(next_run_time=next_run)
                jobstore.update_job(job)
        return
    table = jobstore.jobs_t
    updates = []
    removals = []
    for job, next_run in advances:
        if next_run is None:
            removals.append(job.id)
            continue
        job._modify(next_run_time=next_run)
        updates.append(
            {
                "job_id": job.id,
                "next": datetime_to_utc_timestamp(next_run),
                "state": pickle.dumps(job.__getstate__(), jobstore.pickle_protocol),
            }
        )
    with jobstore.engine.begin() as conn:
        if updates:
            conn.execute(
                table.update()
                .where(table.c.id == bindparam("job_id"))
                .values(next_run_time=bindparam("next"), job_state=bindparam("state")),
                updates,
            )
        if removals:
            conn.execute(table.delete().where(table.c.id.in_(removals)))
