"""Every attempt is a row, written before its body runs: the claim, the skip, the outcome.

A delivery of a fire's message asks to run with :meth:`AttemptStore.claim`. The claim is
the insert of its attempt row ``(message id, attempt number)``, unique among attempts that
ran (``uq_cronwork_attempts_claim``): of two deliveries of one attempt (a re-send, a broker
redelivery) exactly one inserts and runs; the other is recorded as a ``skipped`` attempt
with the reason and never runs. A claim is refused (and recorded) when the fire already
has its outcome, and, under ``overlap: skip``, while another fire of the schedule is in
progress. A delivery of an attempt whose worker stopped takes it over: the old row is
marked abandoned and the delivery runs as the next attempt (a re-send, not a retry).

On Postgres the common case (the claim wins) and every outcome go through one writer per
process that batches them (services/store/group_commit.py); every other case goes
through :meth:`_claim_checked`, a transaction that works the same on SQLite (embedded
mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select, update

from services.fire_message import FireOptions, with_resends
from services.liveness import Liveness
from services.store.engines import is_postgres
from services.store.group_commit import GroupCommit, Pending
from services.store.tables import attempts, fires, schedules
from services.vocabulary import (
    FINAL_FIRE_STATUSES,
    IN_PROGRESS_FIRE_STATUSES,
    AttemptStatus,
    FireStatus,
)


@dataclass(frozen=True)
class Claim:
    """A delivery asking to run."""

    message_id: str
    #: services.fire_message.attempt_number of the delivery.
    attempt: int
    schedule: str
    overlap: str
    instance_id: str
    started_at: datetime
    #: Set on a delivery put back after its claim failed: (instance id, started_at) of that
    #: claim. If the claim did commit (the reply was lost), this delivery adopts its row.
    earlier_claim: tuple[str, datetime] | None = None


@dataclass(frozen=True)
class Claimed:
    """The store's answer: run (``attempt_id`` set), or do not (``skip_reason`` set)."""

    fire_id: int | None
    attempt_id: int | None
    #: The attempt number this delivery runs as (above the asked one after a takeover).
    attempt: int
    skip_reason: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How an attempt that ran ended, and what that makes of its fire."""

    message_id: str
    attempt_id: int
    fire_id: int | None
    attempt: int
    status: AttemptStatus
    fire_status: FireStatus
    finished_at: datetime
    duration_ms: int
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    result: Any = None

    @property
    def final(self) -> bool:
        return self.fire_status in FINAL_FIRE_STATUSES


class AttemptStore:
    def __init__(self, engine: Engine, liveness: Liveness | None = None) -> None:
        self.engine = engine
        #: Tells a redelivery of a running attempt whether that attempt's worker stopped.
        self.liveness = liveness
        self._pg = is_postgres(engine)
        #: Postgres: the common case of every claim and every outcome, batched.
        self.group = GroupCommit(engine) if self._pg else None

    # -- claim ---------------------------------------------------------------------

    def claim(self, c: Claim) -> Claimed:
        if self.group is not None and c.overlap != "skip":
            won = self.group.claim(
                (c.message_id, c.attempt, c.schedule, c.started_at, c.instance_id)
            )
            if won is not None:
                return Claimed(fire_id=won[1], attempt_id=won[0], attempt=c.attempt)
        with self.engine.begin() as conn:
            return self._claim_checked(conn, c)

    def _claim_checked(self, conn: Connection, c: Claim) -> Claimed:
        query = select(fires.c.id, fires.c.status, fires.c.message).where(
            fires.c.message_id == c.message_id
        )
        fire = conn.execute(query.with_for_update() if self._pg else query).first()
        if fire is None:
            return Claimed(None, None, c.attempt, "no fire row for this message")
        if fire.status in FINAL_FIRE_STATUSES:
            return self._skip(conn, c, fire.id, c.attempt, f"fire already {fire.status}")
        number = c.attempt
        held = conn.execute(
            select(attempts.c.id, attempts.c.status, attempts.c.instance_id, attempts.c.started_at)
            .where(
                and_(
                    attempts.c.message_id == c.message_id,
                    attempts.c.attempt == c.attempt,
                    attempts.c.status != AttemptStatus.SKIPPED,
                )
            )
            .with_for_update()
        ).first()
        if held is not None:
            if held.status != AttemptStatus.RUNNING:
                reason = f"duplicate delivery: attempt {c.attempt} already ran ({held.status})"
                return self._skip(conn, c, fire.id, c.attempt, reason)
            if self._adopts(c, held):
                conn.execute(
                    update(attempts)
                    .where(attempts.c.id == held.id)
                    .values(instance_id=c.instance_id, started_at=c.started_at)
                )
                return Claimed(fire.id, held.id, c.attempt)
            if self._holder_alive(held.instance_id) is not False:
                reason = f"duplicate delivery: attempt {c.attempt} is running on {held.instance_id}"
                return self._skip(conn, c, fire.id, c.attempt, reason)
            number = self._take_over(conn, c, fire, held)
        if c.overlap == "skip" and fire.status not in IN_PROGRESS_FIRE_STATUSES:
            busy = self._other_run_in_progress(conn, c, fire.id)
            if busy is not None:
                reason = f"previous run (fire {busy}) still running; overlap: skip"
                skipped = self._skip(conn, c, fire.id, number, reason)
                self._set_fire(conn, fire.id, FireStatus.SKIPPED, c.started_at, error=reason)
                return skipped
        attempt_id = conn.execute(
            attempts.insert()
            .values(
                message_id=c.message_id,
                attempt=number,
                fire_id=fire.id,
                schedule=c.schedule,
                status=AttemptStatus.RUNNING,
                started_at=c.started_at,
                instance_id=c.instance_id,
            )
            .returning(attempts.c.id)
        ).scalar_one()
        conn.execute(
            update(fires)
            .where(fires.c.id == fire.id)
            .values(
                status=FireStatus.RUNNING,
                started_at=func.coalesce(fires.c.started_at, c.started_at),
                attempts=func.max(fires.c.attempts, number + 1)
                if not self._pg
                else func.greatest(fires.c.attempts, number + 1),
                finished_at=None,
                updated_at=c.started_at,
            )
        )
        return Claimed(fire.id, attempt_id, number)

    @staticmethod
    def _adopts(c: Claim, held: Any) -> bool:
        """The running row is this delivery's own earlier claim whose reply was lost."""
        if c.earlier_claim is None:
            return False
        instance_id, started_at = c.earlier_claim
        stored = held.started_at
        if stored.tzinfo is None:  # SQLite
            stored = stored.replace(tzinfo=started_at.tzinfo)
        return bool(held.instance_id == instance_id and stored == started_at)

    def _holder_alive(self, instance_id: str) -> bool | None:
        if self.liveness is None:
            return None
        return self.liveness.alive([instance_id]).get(instance_id)

    def _take_over(self, conn: Connection, c: Claim, fire: Any, held: Any) -> int:
        """Give up the dead worker's attempt; run this delivery as the next one (a re-send)."""
        conn.execute(
            update(attempts)
            .where(and_(attempts.c.id == held.id, attempts.c.status == AttemptStatus.RUNNING))
            .values(
                status=AttemptStatus.ABANDONED,
                abandoned_at=c.started_at,
                finished_at=c.started_at,
                error_type="WorkerLost",
                error_message=f"worker {held.instance_id} stopped; its message came again",
            )
        )
        last = conn.execute(
            select(func.max(attempts.c.attempt)).where(attempts.c.message_id == c.message_id)
        ).scalar_one()
        number = int(last) + 1
        message = dict(fire.message)
        options = FireOptions.from_options(message["options"])
        resends = (options.resends if options is not None else 0) + number - c.attempt
        message["options"] = with_resends(message["options"], resends)
        conn.execute(update(fires).where(fires.c.id == fire.id).values(message=message))
        return number

    def _other_run_in_progress(self, conn: Connection, c: Claim, fire_id: int) -> int | None:
        if self._pg:  # serialise concurrent starts of one schedule
            conn.execute(
                select(schedules.c.name).where(schedules.c.name == c.schedule).with_for_update()
            )
        return conn.execute(
            select(fires.c.id)
            .where(
                and_(
                    fires.c.schedule == c.schedule,
                    fires.c.id != fire_id,
                    fires.c.status.in_(IN_PROGRESS_FIRE_STATUSES),
                )
            )
            .limit(1)
        ).scalar()

    def _skip(self, conn: Connection, c: Claim, fire_id: int, number: int, reason: str) -> Claimed:
        conn.execute(
            attempts.insert().values(
                message_id=c.message_id,
                attempt=number,
                fire_id=fire_id,
                schedule=c.schedule,
                status=AttemptStatus.SKIPPED,
                started_at=c.started_at,
                finished_at=c.started_at,
                duration_ms=0,
                instance_id=c.instance_id,
                error_message=reason,
            )
        )
        return Claimed(fire_id, None, number, reason)

    @staticmethod
    def _set_fire(
        conn: Connection, fire_id: int, status: FireStatus, now: datetime, *, error: str
    ) -> None:
        conn.execute(
            update(fires)
            .where(fires.c.id == fire_id)
            .values(status=status, finished_at=now, updated_at=now, error=error, error_type=None)
        )

    # -- outcome -------------------------------------------------------------------

    def finish_later(self, o: Outcome) -> Pending | None:
        """Queue the outcome in the batch writer and return at once (Postgres); None where
        there is no batch writer: call ``finish``."""
        if self.group is None:
            return None
        return self.group.finish_later(_outcome_values(o))

    def finish(self, o: Outcome) -> None:
        if self.group is not None:
            self.group.finish(_outcome_values(o))
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(attempts)
                .where(attempts.c.id == o.attempt_id)
                .values(
                    status=o.status,
                    finished_at=o.finished_at,
                    duration_ms=o.duration_ms,
                    error_type=o.error_type,
                    error_message=o.error_message,
                    traceback=o.traceback,
                    result=o.result,
                )
            )
            if o.fire_id is not None:
                conn.execute(
                    update(fires)
                    .where(
                        and_(
                            fires.c.id == o.fire_id,
                            fires.c.attempts == o.attempt + 1,
                            fires.c.status.not_in(FINAL_FIRE_STATUSES),
                        )
                    )
                    .values(
                        status=o.fire_status,
                        finished_at=o.finished_at if o.final else None,
                        error=o.error_message,
                        error_type=o.error_type,
                        updated_at=o.finished_at,
                    )
                )


def _outcome_values(o: Outcome) -> tuple[Any, ...]:
    """An outcome as the batch writer takes it (services/store/group_commit.py)."""
    return (
        o.message_id,
        o.attempt_id,
        o.attempt,
        o.status.value,
        o.fire_status.value,
        o.finished_at,
        o.finished_at if o.final else None,
        o.duration_ms,
        o.error_type,
        o.error_message,
        o.traceback,
        o.result,
    )
