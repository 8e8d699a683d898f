"""The SQL behind the watchdog's checks (services/watch/), each query bounded and indexed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, func, literal, select, update

from services.constants import FIRE_OPTION
from services.fire_message import FireOptions, retry_options, with_resends
from services.store.tables import attempts, fires, incidents, schedules
from services.timeutil import as_utc
from services.vocabulary import (
    FINAL_FIRE_STATUSES,
    UNFINISHED_FIRE_STATUSES,
    AttemptStatus,
    FireStatus,
    IncidentKind,
)

#: Only fire rows written within this window are looked at for missed/failed.
LOOKBACK = timedelta(days=2)


@dataclass(frozen=True)
class RunningAttempt:
    id: int
    message_id: str
    attempt: int
    fire_id: int
    schedule: str
    started_at: datetime
    instance_id: str
    #: An ad-hoc run's: its actor, and its ``max_runtime`` (services/adhoc.py).
    actor: str | None = None
    max_runtime_ms: int | None = None


def running_attempts(engine: Engine) -> list[RunningAttempt]:
    stmt = (
        select(
            attempts.c.id,
            attempts.c.message_id,
            attempts.c.attempt,
            attempts.c.fire_id,
            attempts.c.schedule,
            attempts.c.started_at,
            attempts.c.instance_id,
            fires.c.actor,
            fires.c.message["options"][FIRE_OPTION]["max_runtime_ms"].as_integer().label("runtime"),
        )
        .select_from(
            # Running attempts are few (a partial index holds them); each finds its fire by id.
            attempts.join(fires, fires.c.id == attempts.c.fire_id)
        )
        .where(attempts.c.status == AttemptStatus.RUNNING)
    )
    with engine.connect() as conn:
        return [
            RunningAttempt(
                r.id,
                r.message_id,
                r.attempt,
                r.fire_id,
                r.schedule,
                as_utc(r.started_at),  # type: ignore[arg-type]
                r.instance_id,
                r.actor,
                r.runtime,
            )
            for r in conn.execute(stmt)
        ]


def abandon(
    engine: Engine, run: RunningAttempt, now: datetime, why: str, *, resend: bool, max_resends: int
) -> FireStatus | None:
    """Give up an attempt whose worker stopped, and decide its fire in the same transaction.

    ``resend``: the fire goes back to ``pending`` with one more re-send (not a retry: a
    worker that died did not make the job fail), unless it was re-sent ``max_resends``
    times already; then, or without ``resend``, the fire is abandoned. Returns the fire's
    new status, or None when the attempt finished meanwhile (nothing changed).
    """
    with engine.begin() as conn:
        done = conn.execute(
            update(attempts)
            .where(and_(attempts.c.id == run.id, attempts.c.status == AttemptStatus.RUNNING))
            .values(
                status=AttemptStatus.ABANDONED,
                abandoned_at=now,
                finished_at=now,
                error_type="WorkerLost",
                error_message=f"abandoned by the watchdog: {why}",
            )
        )
        if done.rowcount != 1:
            return None
        fire = conn.execute(
            select(fires.c.message, fires.c.status, fires.c.attempts).where(
                fires.c.id == run.fire_id
            )
        ).first()
        # Only while this attempt is the fire's newest: a later one decides it otherwise.
        if fire is None or fire.status in FINAL_FIRE_STATUSES or fire.attempts != run.attempt + 1:
            return None
        options = FireOptions.from_options(fire.message["options"])
        resends = options.resends if options is not None else 0
        if resend and resends < max_resends:
            # The re-send is the attempt after this one. The stored message does not count
            # the retries Dramatiq sent since (attempt 2 of a fire whose 0 and 1 failed
            # still reads retries 0): set them as the retry that sent this attempt had
            # them, then add the re-send, or the re-send repeats an attempt that already
            # ran and every delivery of it is skipped as a duplicate.
            retried = retry_options(fire.message["options"], run.attempt)
            message = {**fire.message, "options": with_resends(retried, resends + 1)}
            status = FireStatus.PENDING
            values: dict[str, Any] = {"message": message}
        else:
            status = FireStatus.ABANDONED
            values = {"finished_at": now}
        conn.execute(
            update(fires)
            .where(and_(fires.c.id == run.fire_id, fires.c.status == fire.status))
            .values(status=status, error=f"lost: {why}", error_type="WorkerLost", **values)
        )
        return status


def pending_by_schedule(engine: Engine, written_before: datetime) -> list[Any]:
    """Per schedule: how many fires are still pending since before ``written_before``."""
    stmt = (
        select(
            fires.c.schedule,
            func.count().label("n"),
            func.max(fires.c.id).label("newest"),
            func.min(fires.c.created_at).label("oldest"),
        )
        .where(and_(fires.c.status == FireStatus.PENDING, fires.c.created_at < written_before))
        .group_by(fires.c.schedule)
    )
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def uncovered_missed_and_failed(engine: Engine, now: datetime) -> list[Any]:
    """Missed and failed fires of the last LOOKBACK newer than any incident about them.

    Compared in the database: with a few percent of fires failing, two days of them are
    thousands of rows, nearly all covered already; only the new ones come back."""
    bad = (FireStatus.MISSED, FireStatus.FAILED, FireStatus.TIMED_OUT)
    covered = (
        select(
            incidents.c.kind,
            incidents.c.schedule,
            func.max(incidents.c.fire_id).label("fire_id"),
        )
        .where(incidents.c.kind.in_((IncidentKind.MISSED, IncidentKind.FAILED)))
        .group_by(incidents.c.kind, incidents.c.schedule)
        .subquery()
    )
    # The incident kind each fire status is covered by.
    kind = case(
        (fires.c.status == FireStatus.MISSED, literal(IncidentKind.MISSED.value)),
        else_=literal(IncidentKind.FAILED.value),
    )
    stmt = (
        select(
            fires.c.id,
            fires.c.schedule,
            fires.c.status,
            fires.c.scheduled_for,
            fires.c.finished_at,
            fires.c.error,
            fires.c.error_type,
            fires.c.actor,
        )
        .select_from(
            fires.outerjoin(
                covered, and_(covered.c.schedule == fires.c.schedule, covered.c.kind == kind)
            )
        )
        .where(
            and_(
                fires.c.created_at > now - LOOKBACK,
                fires.c.status.in_(bad),
                fires.c.id > func.coalesce(covered.c.fire_id, 0),
            )
        )
        .order_by(fires.c.id)
    )
    with engine.connect() as conn:
        return list(conn.execute(stmt).all())


def newest_final_times(engine: Engine, since: datetime) -> dict[str, datetime]:
    """Per schedule, the newest scheduled time at or after ``since`` that has an outcome."""
    stmt = (
        select(fires.c.schedule, func.max(fires.c.scheduled_for).label("latest"))
        .where(and_(fires.c.scheduled_for >= since, fires.c.status.in_(FINAL_FIRE_STATUSES)))
        .group_by(fires.c.schedule)
    )
    with engine.connect() as conn:
        return {r.schedule: as_utc(r.latest) for r in conn.execute(stmt)}  # type: ignore[misc]


def schedule_rows(engine: Engine) -> dict[str, Any]:
    """Each stored schedule's pause and creation time, by name.

    Not the stored definitions: the watchdog has the specs, and decoding 10,000 JSON
    documents every pass took the scheduler from 124 to 227 MB resident (tracemalloc).
    """
    t = schedules
    with engine.connect() as conn:
        return {r.name: r for r in conn.execute(select(t.c.name, t.c.paused, t.c.created_at))}


def unfinished_fires(engine: Engine, unchanged_since: datetime, limit: int = 1000) -> list[Any]:
    """Fires still owed an outcome whose status has not moved since ``unchanged_since``."""
    stmt = (
        select(
            fires.c.id,
            fires.c.schedule,
            fires.c.status,
            fires.c.scheduled_for,
            fires.c.updated_at,
            # For a fire no schedule describes (an ad-hoc run): its grace from its message.
            fires.c.message["options"]["time_limit"].as_integer().label("time_limit_ms"),
            fires.c.message["options"]["max_backoff"].as_integer().label("max_backoff_ms"),
        )
        .where(
            and_(
                fires.c.status.in_(UNFINISHED_FIRE_STATUSES),
                fires.c.updated_at < unchanged_since,
            )
        )
        .order_by(fires.c.updated_at)
        .limit(limit)
    )
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def succeeded_since(engine: Engine, schedule: str, fire_id: int | None, opened: datetime) -> bool:
    cond = [fires.c.schedule == schedule, fires.c.status == FireStatus.SUCCEEDED]
    cond.append(fires.c.id >= fire_id if fire_id is not None else fires.c.finished_at > opened)
    with engine.connect() as conn:
        return conn.execute(select(fires.c.id).where(and_(*cond)).limit(1)).first() is not None
