"""``cronwork_schedules``: each schedule's stored definition and whether it is paused."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Engine, delete, select

from services.schedules.spec import ScheduleSpec
from services.store.engines import upsert
from services.store.tables import schedules
from services.timeutil import utcnow

#: Columns that follow schedules.yaml on every sync; ``paused`` and its details do not.
_DEFINITION = ("actor", "trigger", "timezone", "spec", "fingerprint", "updated_at")


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


def sync_schedule_rows(engine: Engine, specs: Mapping[str, ScheduleSpec]) -> None:
    """Store each schedule's definition (for status, the worker's overlap lock); keep ``paused``."""
    now = utcnow()
    with engine.begin() as conn:
        if specs:
            rows = [schedule_row(spec, now) for spec in specs.values()]
            stmt = upsert(engine, schedules.name).values(rows)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"], set_={k: stmt.excluded[k] for k in _DEFINITION}
            )
            conn.execute(stmt)
        conn.execute(delete(schedules).where(schedules.c.name.not_in(list(specs))))


def set_paused(engine: Engine, spec: ScheduleSpec, paused: bool) -> None:
    """Pause or resume one schedule; kept across restarts and failover (the leader reads it)."""
    now = utcnow()
    stmt = upsert(engine, schedules.name).values(schedule_row(spec, now, paused=paused))
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"], set_={"paused": paused, "paused_at": now if paused else None}
    )
    with engine.begin() as conn:
        conn.execute(stmt)


def paused_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(schedules.c.name).where(schedules.c.paused.is_(True)))
        return {r.name for r in rows}
