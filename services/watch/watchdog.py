"""The watchdog: finds what went wrong with schedules and records it as incidents.

Runs on the lease holder only, every ``CRONWORK_WATCHDOG_INTERVAL`` seconds (default
30), on a thread of its own (``WatchdogRunner``) so a slow pass never delays lease
renewal on the leader's loop. Each pass (``Watchdog.check``):

- lost: an attempt ``running`` on a worker whose heartbeat in ``cronwork_instances``
  is older than ``CRONWORK_LOST_AFTER`` (default 3 x heartbeat interval), or that
  stopped. The attempt becomes ``abandoned``; by the schedule's ``on_lost``:
  ``resend`` (default) puts the fire back to ``pending`` with the same message id and
  the next attempt number, and the leader's re-send of pending fires sends it again at
  once (Dramatiq's own requeue of a dead worker's messages can take hours; the worker
  skips a fire that already succeeded, so a late duplicate is harmless);
  ``abandon`` marks the fire ``abandoned`` (and a Crons ``error`` check-in).
- stuck: an attempt still ``running`` past its schedule's ``max_runtime`` (a live
  worker; the watchdog only reports it, the time limit is what stops it).
- never_enqueued: fires still ``pending`` ``CRONWORK_NEVER_ENQUEUED_AFTER`` seconds
  (default 60) after they were written (the leader keeps re-sending them meanwhile).
- missed: fires recorded ``missed`` (outside the catch-up window) that no incident
  covers yet.
- failed (backstop): fires that ended ``failed``/``timed_out`` more than
  ``FAILED_BACKSTOP_DELAY`` ago that no incident covers (the worker's hook normally
  records them first, with more detail).
- overdue: a schedule (enabled, not paused) whose last expected fire time E (from its
  trigger, E <= now - grace) has no fire with a final outcome at or after E. Grace is
  the schedule's ``grace:``, default max_runtime (else time_limit) + 5 min. A fire that
  failed/was missed is not also overdue: those have their own incidents.

Resolution: overdue/stuck/never_enqueued resolve on the first pass that no longer
sees them; failed/missed/lost resolve when a fire of the schedule at least as new as
the incident's newest fire succeeds. Each opening, reminder and recovery is one Slack
message (services/alerts). Findings are about fire rows from the last
``LOOKBACK`` only, so a pass stays cheap with months of history.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, select, update

from services.redact import redact
from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.settings import Settings
from services.store.tables import (
    attempts,
    fires,
    incidents,
    instances,
    schedules,
)
from services.timeutil import as_utc, iso, utcnow
from services.vocabulary import (
    EVENT_INCIDENTS,
    FINAL_FIRE_STATUSES,
    STATE_INCIDENTS,
    AttemptStatus,
    FireStatus,
    IncidentKind,
)
from services.watch import sentry as cw_sentry
from services.watch.alerter import Alerter

logger = logging.getLogger(__name__)

#: Only fire rows written within this window are looked at for missed/failed.
LOOKBACK = timedelta(days=2)
#: The worker's hook gets this long to record a final failure before the backstop does.
FAILED_BACKSTOP_DELAY = timedelta(seconds=30)
#: Windows tried, smallest first, to find a trigger's latest fire time before a moment.
_PROBE_WINDOWS = (60, 3600, 86400, 32 * 86400, 400 * 86400)
_MAX_WALK = 2000


def last_fire_time(spec: ScheduleSpec, before: datetime) -> datetime | None:
    """The trigger's latest fire time at or before ``before`` (None if it has none)."""
    trigger = build_trigger(spec)
    for seconds in _PROBE_WINDOWS:
        t = trigger.get_next_fire_time(None, before - timedelta(seconds=seconds))
        if t is None or t > before:
            continue
        for _ in range(_MAX_WALK):
            nxt = trigger.get_next_fire_time(t, t)
            if nxt is None or nxt > before or nxt <= t:
                return as_utc(t)
            t = nxt
        return as_utc(t)
    return None


@dataclass
class Report:
    """What one pass found (for logs and tests): (kind, schedule) pairs, and changes."""

    found: set[tuple[str, str]] = field(default_factory=set)
    resolved: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)
    #: Steps that failed: their kinds are not resolved on this pass (nothing was seen).
    failed_steps: list[str] = field(default_factory=list)


class Watchdog:
    def __init__(
        self,
        engine: Engine,
        specs: dict[str, ScheduleSpec],
        alerter: Alerter,
        settings: Settings,
    ) -> None:
        self.engine = engine
        self.specs = specs
        self.alerter = alerter
        self.lost_after = timedelta(seconds=settings.lost_after or 3 * settings.heartbeat_interval)
        self.never_enqueued_after = timedelta(seconds=settings.never_enqueued_after)

    def check(self, now: datetime | None = None) -> Report:
        now = now or utcnow()
        report = Report()
        for step in (self._attempts, self._pending, self._missed_and_failed, self._overdue):
            try:
                step(now, report)
            except Exception as exc:
                report.failed_steps.append(step.__name__)
                logger.error(
                    "watchdog %s failed: %s",
                    step.__name__.strip("_"),
                    redact(str(exc)),
                    exc_info=True,
                    extra={"action": "watchdog_error"},
                )
        self._resolve(now, report)
        self.alerter.redeliver(now)
        return report

    def _finding(
        self, report: Report, kind: IncidentKind, schedule: str, now: datetime, **kw: Any
    ) -> None:
        report.found.add((kind, schedule))
        self.alerter.finding(kind, schedule, now, **kw)

    # -- lost and stuck ------------------------------------------------------------

    def _attempts(self, now: datetime, report: Report) -> None:
        query = (
            select(
                attempts.c.message_id,
                attempts.c.attempt,
                attempts.c.fire_id,
                attempts.c.schedule,
                attempts.c.started_at,
                attempts.c.instance_id,
                instances.c.heartbeat_at,
                instances.c.stopped_at,
            )
            .select_from(
                attempts.outerjoin(instances, instances.c.instance_id == attempts.c.instance_id)
            )
            .where(attempts.c.status == AttemptStatus.RUNNING)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        stuck: dict[str, list[Any]] = {}
        for r in rows:
            started = as_utc(r.started_at)
            beat = as_utc(r.heartbeat_at)
            assert started is not None
            dead = r.stopped_at is not None or beat is None or beat < now - self.lost_after
            if dead and started < now - self.lost_after:
                self._lost(r, beat, now, report)
                continue
            spec = self.specs.get(r.schedule)
            if spec is not None and spec.max_runtime and started < now - spec.max_runtime:
                stuck.setdefault(r.schedule, []).append(r)
        for schedule, runs in stuck.items():
            newest = max(runs, key=lambda r: r.fire_id)
            spec = self.specs[schedule]
            running_for = now - as_utc(newest.started_at)  # type: ignore[operator]
            self._finding(
                report,
                IncidentKind.STUCK,
                schedule,
                now,
                fire_id=newest.fire_id,
                subject=f"fire {newest.fire_id} attempt {newest.attempt + 1}",
                details={
                    "summary": f"{len(runs)} attempt(s) running longer than max_runtime "
                    f"{spec.max_runtime}; the newest for {str(running_for).split('.')[0]}",
                    "attempt": newest.attempt + 1,
                    "instance_id": newest.instance_id,
                    "started_at": iso(newest.started_at),
                    "actor": spec.actor,
                },
            )

    def _lost(self, r: Any, beat: datetime | None, now: datetime, report: Report) -> None:
        spec = self.specs.get(r.schedule)
        policy = spec.on_lost if spec is not None else "resend"
        why = (
            f"worker {r.instance_id} stopped"
            if r.stopped_at is not None
            else f"worker {r.instance_id} last heartbeat {iso(beat) if beat else 'never'}"
        )
        with self.engine.begin() as conn:
            done = conn.execute(
                update(attempts)
                .where(
                    and_(
                        attempts.c.message_id == r.message_id,
                        attempts.c.attempt == r.attempt,
                        attempts.c.status == AttemptStatus.RUNNING,
                    )
                )
                .values(
                    status=AttemptStatus.ABANDONED,
                    finished_at=now,
                    error_type="WorkerLost",
                    error_message=f"abandoned by the watchdog: {why}",
                )
            )
            if done.rowcount != 1:
                return  # finished meanwhile
            fire = conn.execute(
                select(fires.c.message, fires.c.status).where(fires.c.id == r.fire_id)
            ).first()
            live = (FireStatus.RUNNING, FireStatus.RETRYING, FireStatus.ENQUEUED)
            if fire is not None and fire.status in live:
                if policy == "resend":
                    message = copy.deepcopy(fire.message)
                    # The next attempt number, so the re-run is a row of its own.
                    message["options"]["retries"] = r.attempt + 1
                    conn.execute(
                        update(fires)
                        .where(and_(fires.c.id == r.fire_id, fires.c.status.in_(live)))
                        .values(status=FireStatus.PENDING, message=message, error=f"lost: {why}")
                    )
                    report.resent.append(r.fire_id)
                else:
                    conn.execute(
                        update(fires)
                        .where(and_(fires.c.id == r.fire_id, fires.c.status.in_(live)))
                        .values(status=FireStatus.ABANDONED, finished_at=now, error=f"lost: {why}")
                    )
                    report.abandoned.append(r.fire_id)
        logger.warning(
            "%s: attempt %d of fire %s lost (%s); %s",
            r.schedule,
            r.attempt,
            r.fire_id,
            why,
            "re-sending it" if policy == "resend" else "abandoned",
            extra={"action": "attempt_lost", "schedule": r.schedule},
        )
        if policy == "abandon":
            cw_sentry.checkin(spec, r.message_id, "error")
        self._finding(
            report,
            IncidentKind.LOST,
            r.schedule,
            now,
            fire_id=r.fire_id,
            subject=f"fire {r.fire_id} attempt {r.attempt + 1}",
            details={
                "summary": f"{why}; attempt abandoned, fire "
                + ("re-sent" if policy == "resend" else "abandoned (on_lost: abandon)"),
                "attempt": r.attempt + 1,
                "instance_id": r.instance_id,
                "actor": spec.actor if spec else None,
                "policy": policy,
            },
        )

    # -- pending, missed, failed ---------------------------------------------------------

    def _pending(self, now: datetime, report: Report) -> None:
        query = (
            select(
                fires.c.schedule,
                func.count().label("n"),
                func.max(fires.c.id).label("newest"),
                func.min(fires.c.created_at).label("oldest"),
            )
            .where(
                and_(
                    fires.c.status == FireStatus.PENDING,
                    fires.c.created_at < now - self.never_enqueued_after,
                )
            )
            .group_by(fires.c.schedule)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        for r in rows:
            self._finding(
                report,
                IncidentKind.NEVER_ENQUEUED,
                r.schedule,
                now,
                details={
                    "summary": f"{r.n} fire(s) still pending (not in the queue), the oldest "
                    f"written {iso(r.oldest)}; the leader keeps re-sending them — is Redis up?",
                    "pending": r.n,
                },
                subject=f"{r.n} pending fire(s), newest {r.newest}",
            )

    def _missed_and_failed(self, now: datetime, report: Report) -> None:
        since = now - LOOKBACK
        with self.engine.connect() as conn:
            covered = {
                (r.kind, r.schedule): r.fire_id or 0
                for r in conn.execute(
                    select(
                        incidents.c.kind,
                        incidents.c.schedule,
                        func.max(incidents.c.fire_id).label("fire_id"),
                    )
                    .where(incidents.c.kind.in_((IncidentKind.MISSED, IncidentKind.FAILED)))
                    .group_by(incidents.c.kind, incidents.c.schedule)
                )
            }
            found = conn.execute(
                select(
                    fires.c.id,
                    fires.c.schedule,
                    fires.c.status,
                    fires.c.scheduled_for,
                    fires.c.error,
                    fires.c.error_type,
                )
                .where(
                    and_(
                        fires.c.created_at > since,
                        fires.c.status.in_(
                            (FireStatus.MISSED, FireStatus.FAILED, FireStatus.TIMED_OUT)
                        ),
                    )
                )
                .order_by(fires.c.id)
            ).all()
        groups: dict[tuple[IncidentKind, str], list[Any]] = {}
        for f in found:
            kind = IncidentKind.MISSED if f.status == FireStatus.MISSED else IncidentKind.FAILED
            if f.id <= covered.get((kind, f.schedule), 0):
                continue
            if kind == IncidentKind.FAILED:
                # Skip failures the worker's hook is probably still recording.
                fin = self._finished_at(f.id)
                if fin is not None and fin > now - FAILED_BACKSTOP_DELAY:
                    continue
            groups.setdefault((kind, f.schedule), []).append(f)
        for (kind, schedule), rows in groups.items():
            newest = rows[-1]
            spec = self.specs.get(schedule)
            details: dict[str, Any] = {
                "scheduled_for": iso(newest.scheduled_for),
                "actor": spec.actor if spec else None,
            }
            if kind == IncidentKind.MISSED:
                details["summary"] = (
                    f"{len(rows)} fire(s) missed (outside the catch-up window), "
                    f"the newest at {iso(newest.scheduled_for)}"
                )
            else:
                details.update(
                    error_type=newest.error_type, error=newest.error or "", status=newest.status
                )
            self._finding(
                report,
                kind,
                schedule,
                now,
                fire_id=newest.id,
                subject=f"fire {newest.id}",
                details=details,
            )

    def _finished_at(self, fire_id: int) -> datetime | None:
        with self.engine.connect() as conn:
            return as_utc(
                conn.execute(select(fires.c.finished_at).where(fires.c.id == fire_id)).scalar()
            )

    # -- overdue ---------------------------------------------------------------------

    def _overdue(self, now: datetime, report: Report) -> None:
        with self.engine.connect() as conn:
            rows = {r.name: r for r in conn.execute(select(schedules))}
        expected: dict[str, tuple[datetime, ScheduleSpec]] = {}
        for name, spec in self.specs.items():
            row = rows.get(name)
            if not spec.enabled or row is None or row.paused:
                continue
            e = last_fire_time(spec, now - spec.overdue_grace())
            # A fire due before the schedule existed here is not owed.
            if e is not None and e >= as_utc(row.created_at):  # type: ignore[operator]
                expected[name] = (e, spec)
        if not expected:
            return
        earliest = min(e for e, _ in expected.values())
        with self.engine.connect() as conn:
            latest = {
                r.schedule: as_utc(r.latest)
                for r in conn.execute(
                    select(fires.c.schedule, func.max(fires.c.scheduled_for).label("latest"))
                    .where(
                        and_(
                            fires.c.scheduled_for >= earliest,
                            fires.c.status.in_(FINAL_FIRE_STATUSES),
                        )
                    )
                    .group_by(fires.c.schedule)
                )
            }
        for name, (e, spec) in expected.items():
            last = latest.get(name)
            if last is not None and last >= e:
                continue
            self._finding(
                report,
                IncidentKind.OVERDUE,
                name,
                now,
                subject=f"fire due {iso(e)}",
                details={
                    "summary": f"the fire due {iso(e)} has no outcome after a grace of "
                    f"{spec.overdue_grace()} ({spec.describe_trigger()})",
                    "scheduled_for": iso(e),
                    "actor": spec.actor,
                },
            )

    # -- resolution ------------------------------------------------------------------

    def _resolve(self, now: datetime, report: Report) -> None:
        try:
            open_incidents = self.alerter.store.open_incidents()
        except Exception as exc:
            logger.error("watchdog could not list incidents: %s", redact(str(exc)))
            return
        for inc in open_incidents:
            key = (inc.kind, inc.schedule)
            try:
                if inc.kind in STATE_INCIDENTS:
                    clear = key not in report.found and not report.failed_steps
                elif inc.kind in EVENT_INCIDENTS:
                    clear = self._succeeded_since(inc.schedule, inc.fire_id, inc.opened_at)
                else:
                    clear = False
                if clear and self.alerter.resolve(inc, now) is not None:
                    report.resolved.append(inc.id)
            except Exception as exc:
                logger.error("could not resolve incident #%d: %s", inc.id, redact(str(exc)))

    def _succeeded_since(self, schedule: str, fire_id: int | None, opened: datetime) -> bool:
        cond = [fires.c.schedule == schedule, fires.c.status == FireStatus.SUCCEEDED]
        if fire_id is not None:
            cond.append(fires.c.id >= fire_id)
        else:
            cond.append(fires.c.finished_at > opened)
        with self.engine.connect() as conn:
            return conn.execute(select(fires.c.id).where(and_(*cond)).limit(1)).first() is not None


class WatchdogRunner:
    """Runs ``Watchdog.check`` on a thread of its own, at most one pass at a time."""

    def __init__(self, watchdog: Watchdog, interval: float) -> None:
        self.watchdog = watchdog
        self.interval = interval
        self._thread: threading.Thread | None = None
        self._next = 0.0

    def kick(self, monotonic_now: float, may_run: Callable[[], bool]) -> bool:
        """Start a pass if one is due and none is running; True if one started."""
        if monotonic_now < self._next or (self._thread is not None and self._thread.is_alive()):
            return False
        self._next = monotonic_now + self.interval

        def run() -> None:
            if not may_run():
                return
            try:
                self.watchdog.check()
            except Exception as exc:
                logger.error("watchdog pass failed: %s", redact(str(exc)), exc_info=True)

        self._thread = threading.Thread(target=run, name="cronwork-watchdog", daemon=True)
        self._thread.start()
        return True
