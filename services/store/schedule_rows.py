"""``cronwork_schedules``: each schedule's stored definition and whether it is paused.

A pause may carry a reason, who set it and an end (``paused_until``). A pause whose end
has passed no longer counts (:func:`paused_names`), so the leader fires the schedule
again at its next time by itself; :func:`resume_expired` then clears the row and writes
the automatic resume to the audit once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, delete, or_, select, update

from services.schedules.spec import ScheduleSpec, fingerprint_of
from services.store import audit
from services.store.engines import upsert
from services.store.tables import schedules
from services.timeutil import iso, utcnow
from services.vocabulary import AuditAction

#: Columns that follow schedules.yaml on every sync; ``paused`` and its details do not.
_DEFINITION = ("actor", "trigger", "timezone", "spec", "fingerprint", "updated_at")


def schedule_row(
    spec: ScheduleSpec,
    now: datetime,
    *,
    paused: bool = False,
    data: dict[str, Any] | None = None,
    fingerprint: str | None = None,
) -> dict[str, object]:
    """The row of ``spec``; ``data`` and ``fingerprint``, when given, are its ``to_json()``
    and ``fingerprint()`` already computed."""
    if data is None:
        data = spec.to_json()
    return {
        "name": spec.name,
        "actor": spec.actor,
        "trigger": spec.describe_trigger(),
        "timezone": spec.timezone,
        "spec": data,
        "fingerprint": fingerprint or fingerprint_of(data),
        "paused": paused,
        "paused_at": now if paused else None,
        "created_at": now,
        "updated_at": now,
    }


def sync_schedule_rows(engine: Engine, specs: Mapping[str, ScheduleSpec]) -> None:
    """Store each schedule's definition (for status, the worker's overlap lock); keep ``paused``.

    Only new and changed schedules are written, as one statement with many parameter sets
    (compiled once): a single INSERT with 10,000 literal rows took 85% of a new leader's
    start to compile (py-spy), and a restart changes few schedules or none.
    """
    now = utcnow()
    with engine.begin() as conn:
        stored = dict(conn.execute(select(schedules.c.name, schedules.c.fingerprint)).all())
        rows = []
        for spec in specs.values():
            data = spec.to_json()
            fingerprint = fingerprint_of(data)
            if stored.get(spec.name) != fingerprint:
                rows.append(schedule_row(spec, now, data=data, fingerprint=fingerprint))
        if rows:
            stmt = upsert(engine, schedules.name)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"], set_={k: stmt.excluded[k] for k in _DEFINITION}
            )
            conn.execute(stmt, rows)
        gone = [name for name in stored if name not in specs]
        for start in range(0, len(gone), 1000):
            conn.execute(delete(schedules).where(schedules.c.name.in_(gone[start : start + 1000])))


def set_paused(
    engine: Engine,
    spec: ScheduleSpec,
    paused: bool,
    *,
    who: str,
    reason: str | None = None,
    until: datetime | None = None,
) -> None:
    """Pause (optionally until a time) or resume one schedule, and audit it, in one transaction.

    Kept across restarts and failover: the leader reads it before every batch of fires.
    """
    now = utcnow()
    pause: dict[str, Any] = {
        "paused": paused,
        "paused_at": now if paused else None,
        "paused_reason": reason if paused else None,
        "paused_until": until if paused else None,
        "paused_by": who if paused else None,
    }
    stmt = upsert(engine, schedules.name).values({**schedule_row(spec, now), **pause})
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_=pause)
    with engine.begin() as conn:
        conn.execute(stmt)
        audit.record(
            conn,
            who=who,
            action=AuditAction.PAUSE if paused else AuditAction.RESUME,
            schedule=spec.name,
            reason=reason,
            details={"until": iso(until)} if paused and until is not None else {},
            at=now,
        )


def in_force(now: datetime) -> ColumnElement[bool]:
    """A pause that holds at ``now``: set, and without an end or before it."""
    return and_(
        schedules.c.paused.is_(True),
        or_(schedules.c.paused_until.is_(None), schedules.c.paused_until > now),
    )


def paused_names(engine: Engine, now: datetime | None = None) -> set[str]:
    """Schedules whose pause is in force; a pause past its ``until`` no longer counts."""
    with engine.connect() as conn:
        rows = conn.execute(select(schedules.c.name).where(in_force(now or utcnow())))
        return {r.name for r in rows}


def resume_expired(engine: Engine, now: datetime | None = None) -> list[str]:
    """Clear pauses whose ``until`` has passed and audit each resume, once.

    The UPDATE's own WHERE makes it once: of two leaders (or two passes) only the one
    whose UPDATE changed the row gets it back, and only that one writes the audit row.
    """
    now = now or utcnow()
    expired = and_(schedules.c.paused.is_(True), schedules.c.paused_until <= now)
    with engine.begin() as conn:
        rows = conn.execute(
            update(schedules)
            .where(expired)
            .values(
                paused=False,
                paused_at=None,
                paused_reason=None,
                paused_until=None,
                paused_by=None,
            )
            .returning(schedules.c.name)
        ).all()
        for row in rows:
            audit.record(
                conn,
                who=audit.SYSTEM_ACTOR,
                action=AuditAction.AUTO_RESUME,
                schedule=row.name,
                reason="the pause ran out",
                at=now,
            )
    return [r.name for r in rows]
