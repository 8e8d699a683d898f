"""Watchdog checks on what is running, or should be: lost and stuck attempts, unfinished fires.

- lost: an attempt ``running`` on a worker that stopped heartbeating (services/liveness.py:
  judged by Redis, which a database outage does not touch, and never while that cannot be
  trusted). The attempt is abandoned; by the schedule's ``on_lost`` the fire is re-sent
  (same message id, one more re-send: not a retry, a dead worker is not a failing job; at
  most ``MAX_LOST_RESENDS`` times) or abandoned.
- stuck: an attempt still running past its schedule's ``max_runtime`` on a live worker
  (reported only: the time limit is what stops it).
- unfinished: any fire still without an outcome, whatever its status, whose status has not
  moved for longer than its grace (a retry's backoff on top while ``retrying``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from services.liveness import Liveness
from services.schedules.spec import DEFAULT_GRACE, ScheduleSpec
from services.store import watch_queries as q
from services.timeutil import as_utc, iso
from services.vocabulary import FireStatus, IncidentKind
from services.watch import sentry as cw_sentry

logger = logging.getLogger(__name__)

#: ``on_lost: resend`` sends a fire again at most this many times; a job that kills its
#: worker every time is then abandoned instead of taking down one worker after another.
MAX_LOST_RESENDS = 3

#: ``find(kind, schedule, now, **incident fields)`` records a finding.
Find = Callable[..., None]


class AttemptChecks:
    """Lost and stuck attempts."""

    def __init__(
        self,
        engine: Engine,
        specs: Mapping[str, ScheduleSpec],
        liveness: Liveness,
        lost_after: timedelta,
        find: Find,
    ) -> None:
        self.engine = engine
        self.specs = specs
        self.liveness = liveness
        self.lost_after = lost_after
        self.find = find
        #: Fire ids re-sent / abandoned by the latest pass (for tests and logs).
        self.resent: list[int] = []
        self.abandoned: list[int] = []

    def __call__(self, now: datetime) -> None:
        self.resent, self.abandoned = [], []
        runs = q.running_attempts(self.engine)
        alive = self.liveness.alive(r.instance_id for r in runs) if runs else {}
        stuck: dict[str, list[q.RunningAttempt]] = {}
        for run in runs:
            if alive.get(run.instance_id) is False and run.started_at < now - self.lost_after:
                self._lost(run, now)
                continue
            limit = self.max_runtime(run)
            if limit and run.started_at < now - limit:
                stuck.setdefault(run.schedule, []).append(run)
        for schedule, runs_of in stuck.items():
            self._stuck(schedule, runs_of, now)

    def max_runtime(self, run: q.RunningAttempt) -> timedelta | None:
        """The schedule's ``max_runtime``; an ad-hoc run's actor's ``max_runtime`` option."""
        spec = self.specs.get(run.schedule)
        if spec is not None:
            return spec.max_runtime
        return timedelta(milliseconds=run.max_runtime_ms) if run.max_runtime_ms else None

    def _lost(self, run: q.RunningAttempt, now: datetime) -> None:
        spec = self.specs.get(run.schedule)
        resend = spec is None or spec.on_lost == "resend"
        why = f"worker {run.instance_id} stopped heartbeating"
        status = q.abandon(self.engine, run, now, why, resend=resend, max_resends=MAX_LOST_RESENDS)
        if status is None:
            return  # it finished meanwhile, or a newer attempt decides its fire
        if status == FireStatus.PENDING:
            self.resent.append(run.fire_id)
            outcome = "re-sent (same message id)"
        else:
            self.abandoned.append(run.fire_id)
            outcome = (
                "abandoned (on_lost: abandon)"
                if not resend
                else f"abandoned after {MAX_LOST_RESENDS} re-sends"
            )
            cw_sentry.checkin(spec, run.message_id, "error")
        logger.warning(
            "%s: attempt %d of fire %s lost (%s); fire %s",
            run.schedule,
            run.attempt,
            run.fire_id,
            why,
            outcome,
            extra={"action": "attempt_lost", "schedule": run.schedule},
        )
        self.find(
            IncidentKind.LOST,
            run.schedule,
            now,
            fire_id=run.fire_id,
            subject=f"fire {run.fire_id} attempt {run.attempt + 1}",
            details={
                "summary": f"{why}; attempt abandoned, fire {outcome}",
                "attempt": run.attempt + 1,
                "instance_id": run.instance_id,
                "actor": spec.actor if spec else run.actor,
                "policy": spec.on_lost if spec else "resend",
            },
        )

    def _stuck(self, schedule: str, runs: list[q.RunningAttempt], now: datetime) -> None:
        newest = max(runs, key=lambda r: r.fire_id)
        spec = self.specs.get(schedule)
        running_for = str(now - newest.started_at).split(".")[0]
        self.find(
            IncidentKind.STUCK,
            schedule,
            now,
            fire_id=newest.fire_id,
            subject=f"fire {newest.fire_id} attempt {newest.attempt + 1}",
            details={
                "summary": f"{len(runs)} attempt(s) running longer than max_runtime "
                f"{self.max_runtime(newest)}; the newest for {running_for}",
                "attempt": newest.attempt + 1,
                "instance_id": newest.instance_id,
                "started_at": iso(newest.started_at),
                "actor": spec.actor if spec else newest.actor,
            },
        )


class UnfinishedFires:
    """Any fire without an outcome past its grace is an incident, whatever its status."""

    def __init__(self, engine: Engine, specs: Mapping[str, ScheduleSpec], find: Find) -> None:
        self.engine = engine
        self.specs = specs
        self.find = find

    def grace(self, fire: Any) -> timedelta:
        spec = self.specs.get(fire.schedule)
        if spec is None:
            # An ad-hoc run (or a schedule since removed): its message's time limit.
            grace = DEFAULT_GRACE + timedelta(milliseconds=fire.time_limit_ms or 0)
            if fire.status == FireStatus.RETRYING:
                grace += timedelta(milliseconds=fire.max_backoff_ms or 0)
            return grace
        if fire.status == FireStatus.RETRYING:  # the retry waits out its backoff first
            return spec.overdue_grace() + spec.max_backoff
        return spec.overdue_grace()

    def __call__(self, now: datetime) -> None:
        shortest = min([DEFAULT_GRACE, *(spec.overdue_grace() for spec in self.specs.values())])
        late: dict[str, list[Any]] = {}
        for fire in q.unfinished_fires(self.engine, now - shortest):
            updated = as_utc(fire.updated_at)
            assert updated is not None
            if updated < now - self.grace(fire):
                late.setdefault(fire.schedule, []).append(fire)
        for schedule, fires in late.items():
            oldest = fires[0]
            self.find(
                IncidentKind.UNFINISHED,
                schedule,
                now,
                subject=f"{len(fires)} unfinished fire(s), oldest {oldest.id}",
                details={
                    "summary": f"{len(fires)} fire(s) without an outcome past their grace; "
                    f"the oldest, fire {oldest.id} due {iso(oldest.scheduled_for)}, has been "
                    f"{oldest.status} since {iso(oldest.updated_at)}",
                    "count": len(fires),
                    "fire_id": oldest.id,
                    "status": oldest.status,
                },
            )
