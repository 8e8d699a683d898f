"""``cronwork_audit``: who paused, resumed, triggered or re-ran a schedule, when and why.

Written in the same transaction as the action itself (a pause and its audit row land
together or not at all). Read by the dashboard, ``GET /api/audit`` and ``cronwork audit``
through :func:`audit_entries`, so all three show the same shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from services.redact import redact
from services.store.tables import audit
from services.timeutil import iso, utcnow
from services.vocabulary import AuditAction

#: Who an action is credited to when a pause runs out by itself.
SYSTEM_ACTOR = "cronwork"
#: Longest reason kept: a reason is a sentence, not a document.
MAX_REASON_CHARS = 500


def record(
    conn: Connection,
    *,
    who: str,
    action: AuditAction,
    schedule: str,
    fire_id: int | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Add one audit row inside the caller's transaction."""
    conn.execute(
        audit.insert().values(
            at=at or utcnow(),
            who=who[:200],
            action=action,
            schedule=schedule,
            fire_id=fire_id,
            reason=(reason or None) and reason.strip()[:MAX_REASON_CHARS],
            details=details or {},
        )
    )


def audit_entries(
    engine: Engine,
    *,
    schedule: str | None = None,
    fire_ids: list[int] | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; ``before_id`` pages back. JSON-ready, text passed through redaction."""
    stmt = select(audit).order_by(audit.c.id.desc()).limit(limit)
    if schedule is not None:
        stmt = stmt.where(audit.c.schedule == schedule)
    if fire_ids is not None:
        stmt = stmt.where(audit.c.fire_id.in_(fire_ids))
    if before_id is not None:
        stmt = stmt.where(audit.c.id < before_id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        {
            "id": r.id,
            "at": iso(r.at),
            "who": redact(r.who),
            "action": r.action,
            "schedule": r.schedule,
            "fire_id": r.fire_id,
            "reason": None if r.reason is None else redact(r.reason),
            "details": dict(r.details or {}),
        }
        for r in rows
    ]
