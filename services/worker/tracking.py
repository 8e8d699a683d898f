"""Write every attempt of every fire to the database (DESIGN invariant 5).

Placed *before* ``Retries`` in the middleware list: Dramatiq runs after-hooks in
reverse order, so by the time ``after_process_message`` runs here, ``Retries``
has already decided whether this attempt will be retried (``message.failed``).

A tracking write that fails is logged loudly and never fails the job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy import Connection, Engine, and_, bindparam, func, select, update

from services import metrics
from services.constants import FIRE_OPTION
from services.context import FireInfo, _set_current
from services.redact import redact
from services.store.engines import is_postgres, upsert
from services.store.tables import attempts, fires, schedules
from services.timeutil import utcnow
from services.vocabulary import (
    IN_PROGRESS_FIRE_STATUSES,
    AttemptStatus,
    FireKind,
    FireStatus,
)

logger = logging.getLogger(__name__)

#: Error messages are cut to this many characters in the attempt row.
MAX_ERROR_CHARS = 4000


@dataclass
class _Attempt:
    message_id: str
    attempt: int
    fire_id: int | None
    schedule: str
    started_at: datetime
    started_mono: float


class _Statements:
    """The hot-path SQL, built once per engine.

    Building a SQLAlchemy statement costs more CPU than running it on a nearby Postgres;
    with the GIL shared by all worker threads, building these per message capped a
    worker at a fraction of Dramatiq's own throughput. Values go in as parameters.
    """

    #: Attempt columns written when an attempt starts (or is skipped).
    ATTEMPT_COLUMNS = (
        "message_id",
        "attempt",
        "fire_id",
        "schedule",
        "status",
        "started_at",
        "instance_id",
        "finished_at",
        "duration_ms",
        "error_message",
    )

    def __init__(self, engine: Engine) -> None:
        pg = is_postgres(engine)
        lock = select(fires.c.id, fires.c.status).where(fires.c.message_id == bindparam("m_id"))
        self.lock_fire = lock.with_for_update() if pg else lock
        insert = upsert(engine, attempts.name)
        # A redelivery of the same attempt (a worker died mid-run) overwrites its row.
        self.upsert_attempt = insert.on_conflict_do_update(
            index_elements=["message_id", "attempt"],
            set_={
                k: insert.excluded[k]
                for k in self.ATTEMPT_COLUMNS
                if k not in ("message_id", "attempt")
            },
        )
        self.start_fire = (
            update(fires)
            .where(fires.c.id == bindparam("f_id"))
            .values(
                status=FireStatus.RUNNING,
                started_at=func.coalesce(fires.c.started_at, bindparam("f_started")),
                attempts=bindparam("f_attempts"),
                finished_at=None,
            )
        )
        self.finish_attempt = (
            update(attempts)
            .where(
                and_(
                    attempts.c.message_id == bindparam("m_id"),
                    attempts.c.attempt == bindparam("a_no"),
                )
            )
            .values(
                status=bindparam("a_status"),
                finished_at=bindparam("a_finished"),
                duration_ms=bindparam("a_duration"),
                error_type=bindparam("a_error_type"),
                error_message=bindparam("a_error_message"),
                result=bindparam("a_result", type_=attempts.c.result.type),
            )
        )
        self.finish_fire = (
            update(fires)
            .where(fires.c.id == bindparam("f_id"))
            .values(
                status=bindparam("f_status"),
                finished_at=bindparam("f_finished"),
                error=bindparam("f_error"),
                error_type=bindparam("f_error_type"),
            )
        )


class Tracking(Middleware):
    def __init__(self, engine_factory: Callable[[], Engine], instance_id: str) -> None:
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._sql: _Statements | None = None
        self._engine_lock = threading.Lock()
        self.instance_id = instance_id
        self._local = threading.local()

    @property
    def engine(self) -> Engine:
        # Created lazily in the worker process, never inherited across a fork.
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    engine = self._engine_factory()
                    self._sql = _Statements(engine)
                    self._engine = engine
        return self._engine

    @property
    def sql(self) -> _Statements:
        self.engine  # noqa: B018 (creates the statements with the engine)
        assert self._sql is not None
        return self._sql

    # -- hooks -------------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._local.attempt = None
        _set_current(None)
        opts = message.options.get(FIRE_OPTION)
        if not opts:
            return  # not a cronwork fire: run untracked
        att = _Attempt(
            message_id=message.message_id,
            attempt=int(message.options.get("retries", 0)),
            fire_id=None,
            schedule=opts["schedule"],
            started_at=utcnow(),
            started_mono=time.monotonic(),
        )
        try:
            skip_reason = self._start(att, overlap=opts.get("overlap", "allow"))
        except Exception:
            logger.exception(
                "tracking write failed at start of %s attempt %d; the job runs anyway",
                att.schedule,
                att.attempt,
                extra={"action": "tracking_failed", "schedule": att.schedule},
            )
            skip_reason = None
        if skip_reason is not None:
            logger.info(
                "skipping %s (%s): %s",
                att.schedule,
                opts.get("scheduled_for"),
                skip_reason,
                extra={"action": "fire_skipped", "schedule": att.schedule},
            )
            metrics.record_attempt(att.schedule, AttemptStatus.SKIPPED, None)
            raise SkipMessage(skip_reason)
        self._local.attempt = att
        _set_current(
            FireInfo(
                schedule=att.schedule,
                scheduled_for=datetime.fromisoformat(opts["scheduled_for"].replace("Z", "+00:00")),
                kind=opts.get("kind", FireKind.SCHEDULED),
                fire_id=att.fire_id,
                message_id=att.message_id,
                attempt=att.attempt,
            )
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        att: _Attempt | None = getattr(self._local, "attempt", None)
        self._local.attempt = None
        _set_current(None)
        if att is None:
            return
        if exception is None:
            status, fire_status = AttemptStatus.SUCCEEDED, FireStatus.SUCCEEDED
        else:
            timed_out = isinstance(exception, TimeLimitExceeded)
            if message.failed:
                status = AttemptStatus.TIMED_OUT if timed_out else AttemptStatus.FAILED
                fire_status = FireStatus(status)
            else:
                status = AttemptStatus.TIMED_OUT if timed_out else AttemptStatus.RETRYING
                fire_status = FireStatus.RETRYING
        try:
            self._finish(att, status, fire_status, result, exception)
        except Exception:
            logger.exception(
                "tracking write failed at end of %s attempt %d (%s)",
                att.schedule,
                att.attempt,
                status,
                extra={"action": "tracking_failed", "schedule": att.schedule},
            )

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # Another middleware (e.g. AgeLimit) skipped a message we had marked running.
        att: _Attempt | None = getattr(self._local, "attempt", None)
        self._local.attempt = None
        _set_current(None)
        if att is not None:
            try:
                self._finish(att, AttemptStatus.SKIPPED, FireStatus.SKIPPED, None, None)
            except Exception:
                logger.exception("tracking write failed for skipped %s", att.schedule)

    # -- writes ------------------------------------------------------------------

    def _start(self, att: _Attempt, *, overlap: str) -> str | None:
        """Record the attempt as running; return a reason instead when it must be skipped."""
        pg = is_postgres(self.engine)
        with self.engine.begin() as conn:
            fire = conn.execute(self.sql.lock_fire, {"m_id": att.message_id}).first()
            if fire is None:
                logger.warning(
                    "no fire row for message %s of %s; running untracked",
                    att.message_id,
                    att.schedule,
                )
                return None
            att.fire_id = fire.id
            if fire.status == FireStatus.SUCCEEDED:
                # A re-send carries the same attempt number as the run that succeeded:
                # record the skip as the next attempt instead of overwriting that row.
                last = conn.execute(
                    select(func.max(attempts.c.attempt)).where(
                        attempts.c.message_id == att.message_id
                    )
                ).scalar()
                if last is not None and last >= att.attempt:
                    att.attempt = last + 1
                self._write_attempt(
                    conn, att, AttemptStatus.SKIPPED, error="fire already succeeded"
                )
                return "fire already succeeded"
            if overlap == "skip" and fire.status not in IN_PROGRESS_FIRE_STATUSES:
                if pg:  # serialise concurrent starts of one schedule
                    conn.execute(
                        select(schedules.c.name)
                        .where(schedules.c.name == att.schedule)
                        .with_for_update()
                    )
                busy = conn.execute(
                    select(fires.c.id)
                    .where(
                        and_(
                            fires.c.schedule == att.schedule,
                            fires.c.id != fire.id,
                            fires.c.status.in_(IN_PROGRESS_FIRE_STATUSES),
                        )
                    )
                    .limit(1)
                ).first()
                if busy is not None:
                    reason = f"previous run (fire {busy.id}) still running; overlap: skip"
                    self._write_attempt(conn, att, AttemptStatus.SKIPPED, error=reason)
                    conn.execute(
                        update(fires)
                        .where(fires.c.id == fire.id)
                        .values(status=FireStatus.SKIPPED, finished_at=att.started_at, error=reason)
                    )
                    return reason
            self._write_attempt(conn, att, AttemptStatus.RUNNING)
            conn.execute(
                self.sql.start_fire,
                {"f_id": fire.id, "f_started": att.started_at, "f_attempts": att.attempt + 1},
            )
        return None

    def _write_attempt(
        self, conn: Connection, att: _Attempt, status: AttemptStatus, *, error: str | None = None
    ) -> None:
        values: dict[str, Any] = {
            "message_id": att.message_id,
            "attempt": att.attempt,
            "fire_id": att.fire_id,
            "schedule": att.schedule,
            "status": status,
            "started_at": att.started_at,
            "instance_id": self.instance_id,
            "finished_at": att.started_at if status == AttemptStatus.SKIPPED else None,
            "duration_ms": 0 if status == AttemptStatus.SKIPPED else None,
            "error_message": error,
        }
        conn.execute(self.sql.upsert_attempt, values)

    def _finish(
        self,
        att: _Attempt,
        status: AttemptStatus,
        fire_status: FireStatus,
        result: Any,
        exception: BaseException | None,
    ) -> None:
        finished = utcnow()
        duration_ms = int((time.monotonic() - att.started_mono) * 1000)
        # Before the writes: the attempt happened even if recording it fails below.
        metrics.record_attempt(att.schedule, status, duration_ms / 1000)
        error_type = error_message = None
        if exception is not None:
            error_type = type(exception).__name__
            error_message = redact(str(exception) or error_type)[:MAX_ERROR_CHARS]
        final = fire_status != FireStatus.RETRYING
        with self.engine.begin() as conn:
            conn.execute(
                self.sql.finish_attempt,
                {
                    "m_id": att.message_id,
                    "a_no": att.attempt,
                    "a_status": status,
                    "a_finished": finished,
                    "a_duration": duration_ms,
                    "a_error_type": error_type,
                    "a_error_message": error_message,
                    "a_result": _jsonable(result) if status == AttemptStatus.SUCCEEDED else None,
                },
            )
            if att.fire_id is not None:
                conn.execute(
                    self.sql.finish_fire,
                    {
                        "f_id": att.fire_id,
                        "f_status": fire_status,
                        "f_finished": finished if final else None,
                        "f_error": error_message,
                        "f_error_type": error_type,
                    },
                )


def _jsonable(value: Any) -> Any:
    """The actor's return value if JSON can hold it; otherwise a note saying it could not."""
    if value is None:
        return None
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {"unserializable": type(value).__name__}
    return value
