"""Manual fires: "trigger now" and "re-run this failed fire", for the CLI and the dashboard.

A manual fire goes through the fence like any other (kind ``manual``, scheduled for now,
with the schedule's configured arguments only) and is audited. It runs even while the
schedule is paused: an operator asked for it. Without a broker (``cronwork trigger`` or
``cronwork web`` next to an embedded ``cronwork up``) the row is left pending and the
leader sends it within ``CRONWORK_RESEND_AFTER`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dramatiq
from sqlalchemy import Engine, select, update

from services.errors import CronworkError, UnknownSchedule
from services.scheduler.dispatch import Dispatcher
from services.schedules.spec import ScheduleSpec
from services.store import audit
from services.store.fence import Fence, request
from services.store.tables import fires
from services.timeutil import utcnow
from services.vocabulary import RERUNNABLE_FIRE_STATUSES, AuditAction, FireKind


class NotRerunnable(CronworkError):
    """Only a fire that failed, timed out, was abandoned or was missed can be re-run."""


class FireNotFound(CronworkError):
    """No such fire (it may have been pruned by retention)."""


@dataclass(frozen=True)
class ManualFire:
    id: int
    schedule: str
    scheduled_for: datetime
    #: False: left pending for the leader to send (no broker here, or it was unreachable).
    enqueued: bool


def fire_now(
    engine: Engine,
    spec: ScheduleSpec,
    *,
    who: str,
    broker: dramatiq.Broker | None,
    reason: str | None = None,
    rerun_of: int | None = None,
) -> ManualFire:
    """Fence a manual fire at now, audit it, and send it when a broker is given."""
    fence = Fence(engine, who[:200])
    won = fence.claim([request(spec, utcnow(), FireKind.MANUAL)])
    if not won:
        raise CronworkError(f"could not record a manual fire of '{spec.name}'")
    fire = won[0]
    # The fence owns its transaction, so the audit row follows it at once: a crash in
    # between leaves a manual fire without its audit row, never an audit row for nothing.
    with engine.begin() as conn:
        if rerun_of is not None:
            conn.execute(update(fires).where(fires.c.id == fire.id).values(rerun_of=rerun_of))
        audit.record(
            conn,
            who=who,
            action=AuditAction.TRIGGER if rerun_of is None else AuditAction.RERUN,
            schedule=spec.name,
            fire_id=fire.id,
            reason=reason,
            details={} if rerun_of is None else {"rerun_of": rerun_of},
        )
    sent = Dispatcher(broker, fence).send(won) if broker is not None else 0
    return ManualFire(fire.id, spec.name, fire.scheduled_for, enqueued=sent == 1)


def rerun(
    engine: Engine,
    specs: dict[str, ScheduleSpec],
    fire_id: int,
    *,
    who: str,
    broker: dramatiq.Broker | None,
    reason: str | None = None,
) -> ManualFire:
    """A new manual fire for a fire that ended without doing its work, naming it in
    ``rerun_of``. It runs with the schedule's arguments as schedules.yaml has them now."""
    with engine.connect() as conn:
        row = conn.execute(
            select(fires.c.schedule, fires.c.status).where(fires.c.id == fire_id)
        ).first()
    if row is None:
        raise FireNotFound(f"no fire {fire_id}")
    if row.status not in RERUNNABLE_FIRE_STATUSES:
        raise NotRerunnable(f"fire {fire_id} is {row.status}: {NotRerunnable.__doc__}")
    spec = specs.get(row.schedule)
    if spec is None:
        raise UnknownSchedule(
            f"fire {fire_id} belongs to '{row.schedule}', which schedules.yaml does not define"
        )
    return fire_now(engine, spec, who=who, broker=broker, reason=reason, rerun_of=fire_id)
