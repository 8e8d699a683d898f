"""Read models for ``cronwork status`` and ``cronwork history`` (JSON-ready dicts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, select

from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.store.tables import apscheduler_jobs, attempts, fires, instances, schedules
from services.timeutil import as_utc, iso, utcnow


def leader(engine: Engine, lease_ttl: float) -> dict[str, Any] | None:
    """The scheduler that holds the lease, by its own recent heartbeat."""
    fresh = utcnow() - timedelta(seconds=max(lease_ttl, 1.0) * 1.5)
    stmt = (
        select(instances.c.instance_id, instances.c.leader_since)
        .where(
            and_(
                instances.c.role == "scheduler",
                instances.c.leader_since.is_not(None),
                instances.c.stopped_at.is_(None),
                instances.c.heartbeat_at > fresh,
            )
        )
        .order_by(instances.c.leader_since.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return {"instance_id": row.instance_id, "since": iso(row.leader_since)}


def status(engine: Engine, specs: dict[str, ScheduleSpec], lease_ttl: float) -> dict[str, Any]:
    now = datetime.now(UTC)
    with engine.connect() as conn:
        next_runs = {
            r.id: r.next_run_time
            for r in conn.execute(select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time))
        }
        paused = {
            r.name
            for r in conn.execute(select(schedules.c.name).where(schedules.c.paused.is_(True)))
        }
        # The newest fire of each schedule through the (schedule, scheduled_for) index,
        # one probe per schedule: a GROUP BY would read months of history.
        inner = fires.alias("newest")
        newest = (
            select(inner.c.id)
            .where(inner.c.schedule == schedules.c.name)
            .order_by(inner.c.scheduled_for.desc())
            .limit(1)
            .correlate(schedules)
            .scalar_subquery()
        )
        last = {
            r.schedule: r
            for r in conn.execute(
                select(fires)
                .select_from(schedules)
                .join(fires, fires.c.id == newest)
                .where(schedules.c.name.in_(list(specs)))
            )
        }
    out = []
    for spec in specs.values():
        broken: str | None = None
        next_run: datetime | None = None
        if spec.name in next_runs:
            ts = next_runs[spec.name]
            next_run = None if ts is None else datetime.fromtimestamp(ts, UTC)
        elif spec.enabled:
            try:
                first = build_trigger(spec).get_next_fire_time(None, now)
                next_run = first and first.astimezone(UTC)  # year 1 at +05:00 is not in UTC
            except Exception as exc:  # one schedule's trigger must not fail the whole report
                broken = f"{type(exc).__name__}: {exc}"
        fire = last.get(spec.name)
        out.append(
            {
                "name": spec.name,
                "actor": spec.actor,
                "trigger": spec.describe_trigger(),
                "timezone": spec.timezone,
                "enabled": spec.enabled,
                "paused": spec.name in paused,
                "next_run": iso(next_run) if spec.enabled and spec.name not in paused else None,
                # Why its fire times cannot be computed (services/scheduler/broken.py).
                "broken": broken,
                "last_fire": None
                if fire is None
                else {
                    "scheduled_for": iso(fire.scheduled_for),
                    "status": fire.status,
                    "duration_ms": _duration_ms(fire.started_at, fire.finished_at),
                },
            }
        )
    return {"leader": leader(engine, lease_ttl), "schedules": out}


def history(engine: Engine, schedule: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    stmt = select(fires).order_by(fires.c.scheduled_for.desc(), fires.c.id.desc()).limit(limit)
    if schedule is not None:
        stmt = stmt.where(fires.c.schedule == schedule)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        ids = [r.id for r in rows]
        by_fire: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            for a in conn.execute(
                select(attempts)
                .where(attempts.c.fire_id.in_(ids))
                .order_by(attempts.c.fire_id, attempts.c.attempt)
            ):
                by_fire[a.fire_id].append(
                    {
                        "attempt": a.attempt,
                        "status": a.status,
                        "started_at": iso(a.started_at),
                        "finished_at": iso(a.finished_at),
                        "duration_ms": a.duration_ms,
                        "instance_id": a.instance_id,
                        "error": f"{a.error_type}: {a.error_message}"
                        if a.error_type
                        else a.error_message,
                    }
                )
    return [
        {
            "id": r.id,
            "schedule": r.schedule,
            "scheduled_for": iso(r.scheduled_for),
            "kind": r.kind,
            "status": r.status,
            "error": f"{r.error_type}: {r.error}" if r.error_type else r.error,
            "attempts": by_fire[r.id],
        }
        for r in rows
    ]


def _duration_ms(start: datetime | None, end: datetime | None) -> int | None:
    start, end = as_utc(start), as_utc(end)
    if start is None or end is None:
        return None
    return int((end - start).total_seconds() * 1000)
