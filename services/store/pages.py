"""Read models of the dashboard's pages, served as HTML and as JSON by the same routes.

The schedules come from schedules.yaml (the ``specs``); history from the database. A fire
whose schedule is not in schedules.yaml (renamed, removed, or an ad-hoc run sent from
application code) is still shown: its schedule page then has history but no definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.store.audit import audit_entries
from services.store.incidents import Incident
from services.store.schedule_rows import in_force
from services.store.tables import apscheduler_jobs, fires, incidents, schedules
from services.store.views import (
    duration_ms,
    fire_attempts,
    fire_json,
    leader,
    redact_json,
    schedule_rows,
)
from services.timeutil import iso
from services.vocabulary import IncidentKind, ScheduleFilter

#: Upcoming fire times shown on a schedule's page.
UPCOMING = 5
#: Recent fires drawn in a schedule's duration and delay charts.
CHART_FIRES = 60


@dataclass(frozen=True)
class SchedulesQuery:
    q: str = ""
    status: ScheduleFilter | None = None
    page: int = 1
    per_page: int = 50


def schedules_page(
    engine: Engine, specs: dict[str, ScheduleSpec], query: SchedulesQuery, lease_ttl: float
) -> dict[str, Any]:
    """One page of schedules matching a name search and a status filter.

    Searching and filtering run over the names (schedules.yaml, in memory) and small
    tables (paused schedules, open incidents, jobs); only the page's rows read history.
    """
    now = datetime.now(UTC)
    needle = query.q.strip().lower()
    chosen = [s for s in specs.values() if needle in s.name.lower()]
    if query.status is not None:
        keep = _filter(engine, chosen, query.status, now)
        chosen = [s for s in chosen if s.name in keep]
    total = len(chosen)
    pages = max(1, -(-total // query.per_page))
    page = min(max(query.page, 1), pages)
    shown = chosen[(page - 1) * query.per_page : page * query.per_page]
    return {
        "leader": leader(engine, lease_ttl),
        "total": total,
        "page": page,
        "pages": pages,
        "per_page": query.per_page,
        "q": query.q,
        "status": query.status,
        "schedules": schedule_rows(engine, shown, now),
    }


def _filter(
    engine: Engine, chosen: list[ScheduleSpec], wanted: ScheduleFilter, now: datetime
) -> set[str]:
    """Names among ``chosen`` in the ``wanted`` state (whole small tables, no history)."""
    if wanted == ScheduleFilter.DISABLED:
        return {s.name for s in chosen if not s.enabled}
    with engine.connect() as conn:
        paused = {r.name for r in conn.execute(select(schedules.c.name).where(in_force(now)))}
        if wanted == ScheduleFilter.PAUSED:
            return paused
        if wanted == ScheduleFilter.ACTIVE:
            return {s.name for s in chosen if s.enabled and s.name not in paused}
        opened = conn.execute(
            select(incidents.c.schedule, incidents.c.kind).where(incidents.c.resolved_at.is_(None))
        ).all()
        if wanted == ScheduleFilter.INCIDENT:
            return {r.schedule for r in opened}
        if wanted == ScheduleFilter.FAILING:
            return {r.schedule for r in opened if r.kind == IncidentKind.FAILED}
        overdue = {r.schedule for r in opened if r.kind == IncidentKind.OVERDUE}
        jobs = conn.execute(select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time)).all()
    next_runs = {r.id: r.next_run_time for r in jobs}
    for spec in chosen:
        ts = next_runs.get(spec.name)
        late = ts is not None and ts < (now - spec.overdue_grace()).timestamp()
        if late and spec.enabled and spec.name not in paused:
            overdue.add(spec.name)
    return overdue - paused


def schedule_detail(
    engine: Engine, specs: dict[str, ScheduleSpec], name: str
) -> dict[str, Any] | None:
    """A schedule's definition, state, upcoming fires, chart data, audit and incidents.

    None when schedules.yaml does not define it and no fire of it was ever recorded.
    """
    spec = specs.get(name)
    with engine.connect() as conn:
        recent = conn.execute(
            select(fires.c.id, fires.c.scheduled_for, fires.c.status)
            .add_columns(fires.c.started_at, fires.c.finished_at)
            .where(fires.c.schedule == name)
            .order_by(fires.c.scheduled_for.desc())
            .limit(CHART_FIRES)
        ).all()
        found = conn.execute(
            select(incidents)
            .where(incidents.c.schedule == name)
            .order_by(incidents.c.id.desc())
            .limit(20)
        ).all()
    if spec is None and not recent:
        return None
    upcoming: list[str | None] = []
    row = None
    if spec is not None:
        row = schedule_rows(engine, [spec])[0]
        if row["next_run"] is not None:
            trigger = build_trigger(spec)
            t = datetime.fromisoformat(row["next_run"].replace("Z", "+00:00"))
            while t is not None and len(upcoming) < UPCOMING:
                upcoming.append(iso(t))
                t = trigger.get_next_fire_time(t, t)
    return {
        "name": name,
        "in_schedules_yaml": spec is not None,
        "schedule": row,
        "definition": None if spec is None else redact_json(spec.to_json()),
        "upcoming": upcoming,
        "recent": [
            {
                "id": r.id,
                "scheduled_for": iso(r.scheduled_for),
                "status": r.status,
                "duration_ms": duration_ms(r.started_at, r.finished_at),
                "delay_ms": duration_ms(r.scheduled_for, r.started_at),
            }
            for r in reversed(recent)
        ],
        "audit": audit_entries(engine, schedule=name, limit=20),
        "incidents": [incident_json(r) for r in found],
    }


def fire_detail(
    engine: Engine, specs: dict[str, ScheduleSpec], fire_id: int
) -> dict[str, Any] | None:
    """One fire, every attempt of it, what it sent, its re-runs and its audit rows."""
    with engine.connect() as conn:
        row = conn.execute(select(fires).where(fires.c.id == fire_id)).first()
        if row is None:
            return None
        by_fire = fire_attempts(conn, [fire_id])
        reruns = [
            r.id
            for r in conn.execute(
                select(fires.c.id).where(fires.c.rerun_of == fire_id).order_by(fires.c.id)
            )
        ]
    message = row.message or {}
    return {
        "fire": fire_json(row, by_fire[fire_id]),
        "in_schedules_yaml": row.schedule in specs,
        "message": redact_json(
            {
                "actor": message.get("actor_name"),
                "queue": message.get("queue_name"),
                "args": message.get("args", []),
                "kwargs": message.get("kwargs", {}),
            }
        ),
        "reruns": reruns,
        # The action that made this fire, and those that re-ran it.
        "audit": audit_entries(engine, fire_ids=[fire_id, *reruns]),
    }


def incidents_list(
    engine: Engine, *, resolved: bool | None, limit: int = 50, before: int | None = None
) -> list[dict[str, Any]]:
    """Newest first; ``resolved`` None lists both; ``before`` (an incident id) pages back."""
    query = select(incidents).order_by(incidents.c.id.desc()).limit(limit)
    if resolved is True:
        query = query.where(incidents.c.resolved_at.is_not(None))
    elif resolved is False:
        query = query.where(incidents.c.resolved_at.is_(None))
    if before is not None:
        query = query.where(incidents.c.id < before)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [incident_json(r) for r in rows]


def incident_json(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = redact_json(Incident.from_row(row).to_json())
    return out
