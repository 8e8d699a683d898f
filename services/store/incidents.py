"""Incidents: one row per thing that went wrong, opened once, folded, resolved once.

Rules (table ``cronwork_incidents``, services/models.py):

- At most one *open* incident per ``(kind, schedule)`` (a partial unique index on
  ``resolved_at IS NULL``). Recording a finding for a pair that already has one folds
  into it: ``last_seen_at`` moves; ``count`` grows only when the finding is about a
  *newer fire* than the incident's ``fire_id`` (so a condition seen on every
  watchdog pass, or the same failed fire reported by both the worker and the
  watchdog, is counted once).
- ``last_notified_at`` NULL means the opening message is not delivered yet (the
  watchdog's outbox pass retries it); a reminder is claimed by moving it forward.
- Resolving sets ``resolved_at`` once; ``recovery_notified_at`` tracks the recovery
  message the same way.

Works on Postgres (``FOR UPDATE`` serialises folding) and SQLite (one writer anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, and_, select, update

from services.store.engines import is_postgres, upsert
from services.store.tables import incidents
from services.timeutil import as_utc, iso
from services.vocabulary import IncidentKind


@dataclass(frozen=True)
class Incident:
    id: int
    kind: IncidentKind
    schedule: str
    fire_id: int | None
    subject: str | None
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    count: int
    last_notified_at: datetime | None
    recovery_notified_at: datetime | None
    details: dict[str, Any]
    sentry_event_id: str | None

    @classmethod
    def from_row(cls, row: Any) -> Incident:
        m = row._mapping
        return cls(
            id=m["id"],
            kind=IncidentKind(m["kind"]),
            schedule=m["schedule"],
            fire_id=m["fire_id"],
            subject=m["subject"],
            opened_at=as_utc(m["opened_at"]),  # type: ignore[arg-type]
            last_seen_at=as_utc(m["last_seen_at"]),  # type: ignore[arg-type]
            resolved_at=as_utc(m["resolved_at"]),
            count=m["count"],
            last_notified_at=as_utc(m["last_notified_at"]),
            recovery_notified_at=as_utc(m["recovery_notified_at"]),
            details=dict(m["details"] or {}),
            sentry_event_id=m["sentry_event_id"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "schedule": self.schedule,
            "status": "open" if self.resolved_at is None else "resolved",
            "fire_id": self.fire_id,
            "subject": self.subject,
            "opened_at": iso(self.opened_at),
            "last_seen_at": iso(self.last_seen_at),
            "resolved_at": iso(self.resolved_at),
            "count": self.count,
            "last_notified_at": iso(self.last_notified_at),
            "recovery_notified_at": iso(self.recovery_notified_at),
            "sentry_event_id": self.sentry_event_id,
            "details": self.details,
        }


@dataclass(frozen=True)
class Outcome:
    #: opened: a new incident; folded: a newer fire joined it; seen: nothing new.
    action: Literal["opened", "folded", "seen"]
    incident: Incident
    #: True when this call claimed a reminder (last_notified_at moved to now).
    remind: bool = False


class IncidentStore:
    def __init__(self, engine: Engine, reminder: float = 3600.0) -> None:
        self.engine = engine
        self.reminder = timedelta(seconds=reminder)

    def record(
        self,
        kind: IncidentKind,
        schedule: str,
        now: datetime,
        *,
        details: dict[str, Any],
        fire_id: int | None = None,
        subject: str | None = None,
        sentry_event_id: str | None = None,
    ) -> Outcome:
        """Open an incident for (kind, schedule), or fold this finding into the open one."""
        pg = is_postgres(self.engine)
        for _ in range(5):
            with self.engine.begin() as conn:
                query = select(incidents).where(
                    and_(
                        incidents.c.kind == kind,
                        incidents.c.schedule == schedule,
                        incidents.c.resolved_at.is_(None),
                    )
                )
                row = conn.execute(query.with_for_update() if pg else query).first()
                if row is None:
                    stmt = (
                        upsert(self.engine, incidents.name)
                        .values(
                            kind=kind,
                            schedule=schedule,
                            fire_id=fire_id,
                            subject=subject,
                            opened_at=now,
                            last_seen_at=now,
                            count=1,
                            details=details,
                            sentry_event_id=sentry_event_id,
                        )
                        .on_conflict_do_nothing(
                            index_elements=["kind", "schedule"],
                            index_where=incidents.c.resolved_at.is_(None),
                        )
                        .returning(*incidents.c)
                    )
                    got = conn.execute(stmt).first()
                    if got is not None:
                        return Outcome("opened", Incident.from_row(got))
                    continue  # opened concurrently by someone else: fold into theirs
                current = Incident.from_row(row)
                newer = fire_id is not None and (
                    current.fire_id is None or fire_id > current.fire_id
                )
                values: dict[str, Any] = {"last_seen_at": now}
                if newer:
                    values.update(count=current.count + 1, fire_id=fire_id, subject=subject)
                    values["details"] = details
                    if sentry_event_id:
                        values["sentry_event_id"] = sentry_event_id
                elif fire_id is None:
                    values["details"] = details  # a state: keep its description current
                elif fire_id == current.fire_id and sentry_event_id and not current.sentry_event_id:
                    values["sentry_event_id"] = sentry_event_id
                remind = (
                    current.last_notified_at is not None
                    and now - current.last_notified_at >= self.reminder
                )
                if remind:
                    values["last_notified_at"] = now
                got = conn.execute(
                    update(incidents)
                    .where(incidents.c.id == current.id)
                    .values(**values)
                    .returning(*incidents.c)
                ).first()
                assert got is not None
                return Outcome("folded" if newer else "seen", Incident.from_row(got), remind)
        raise RuntimeError(f"could not record {kind} incident for {schedule}")

    def resolve(self, incident_id: int, now: datetime) -> Incident | None:
        """Resolve an open incident; None if it was already resolved (by someone else)."""
        with self.engine.begin() as conn:
            row = conn.execute(
                update(incidents)
                .where(and_(incidents.c.id == incident_id, incidents.c.resolved_at.is_(None)))
                .values(resolved_at=now, last_seen_at=now)
                .returning(*incidents.c)
            ).first()
        return Incident.from_row(row) if row is not None else None

    def mark_notified(self, incident_id: int, now: datetime, *, recovery: bool = False) -> None:
        column = "recovery_notified_at" if recovery else "last_notified_at"
        with self.engine.begin() as conn:
            conn.execute(
                update(incidents).where(incidents.c.id == incident_id).values({column: now})
            )

    def open_incidents(self) -> list[Incident]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(incidents).where(incidents.c.resolved_at.is_(None)).order_by(incidents.c.id)
            ).all()
        return [Incident.from_row(r) for r in rows]

    def undelivered(self, now: datetime, *, min_age: float, max_age: float) -> list[Incident]:
        """Incidents whose opening or recovery message is still owed (the outbox)."""
        young = now - timedelta(seconds=min_age)
        old = now - timedelta(seconds=max_age)
        opening = and_(
            incidents.c.last_notified_at.is_(None),
            incidents.c.resolved_at.is_(None),
            incidents.c.opened_at < young,
            incidents.c.opened_at > old,
        )
        recovery = and_(
            incidents.c.resolved_at.is_not(None),
            incidents.c.last_notified_at.is_not(None),
            incidents.c.recovery_notified_at.is_(None),
            incidents.c.resolved_at < young,
            incidents.c.resolved_at > old,
        )
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(incidents).where(opening | recovery).order_by(incidents.c.id).limit(100)
            ).all()
        return [Incident.from_row(r) for r in rows]

    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[Incident]:
        query = select(incidents).order_by(incidents.c.opened_at.desc(), incidents.c.id.desc())
        if not include_resolved:
            query = query.where(incidents.c.resolved_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [Incident.from_row(r) for r in rows]
