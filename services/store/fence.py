"""The fence: one row per (schedule, scheduled time), written before any message is sent.

``INSERT … ON CONFLICT DO NOTHING RETURNING`` returns only the rows this caller
won, so two schedulers that both believe they lead still fire each time once
(DESIGN invariant 1). Rows start ``pending``; they become ``enqueued`` once the
broker has the message, and the leader re-sends rows left pending (invariant 4).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, select, update

from services import metrics
from services.constants import FIRE_OPTION
from services.schedules.spec import ScheduleSpec
from services.store.engines import upsert
from services.store.tables import fires
from services.timeutil import as_utc, iso, utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FireRequest:
    schedule: str
    scheduled_for: datetime
    kind: str  # scheduled | catchup | manual
    status: str  # pending | skipped | missed
    message: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True)
class Fire:
    """A fire row this process won and must send."""

    id: int
    schedule: str
    scheduled_for: datetime
    message_id: str
    message: dict[str, Any]


def ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def jitter_ms(spec: ScheduleSpec, scheduled_for: datetime) -> int:
    """A delay in [0, jitter) derived from the fire itself, so every replica agrees."""
    if spec.jitter is None:
        return 0
    digest = hashlib.sha256(f"{spec.name}|{iso(scheduled_for)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(ms(spec.jitter), 1)


def build_message(spec: ScheduleSpec, scheduled_for: datetime, kind: str) -> dict[str, Any]:
    """Everything needed to send (and re-send) this fire's Dramatiq message."""
    options: dict[str, Any] = {
        "max_retries": spec.max_retries,
        "min_backoff": ms(spec.min_backoff),
        "max_backoff": ms(spec.max_backoff),
        FIRE_OPTION: {
            "schedule": spec.name,
            "scheduled_for": iso(scheduled_for),
            "kind": kind,
            "overlap": spec.overlap,
        },
    }
    if spec.time_limit is not None:
        options["time_limit"] = ms(spec.time_limit)
    return {
        "queue_name": spec.queue,
        "actor_name": spec.actor,
        "args": list(spec.args),
        "kwargs": dict(spec.kwargs),
        "options": options,
        "jitter_ms": jitter_ms(spec, scheduled_for),
    }


def request(
    spec: ScheduleSpec, scheduled_for: datetime, kind: str, status: str = "pending"
) -> FireRequest:
    return FireRequest(
        spec.name, scheduled_for, kind, status, build_message(spec, scheduled_for, kind)
    )


class Fence:
    def __init__(self, engine: Engine, instance_id: str) -> None:
        self.engine = engine
        self.instance_id = instance_id

    def claim(self, requests: list[FireRequest]) -> list[Fire]:
        """Insert the rows in one transaction; return the pending ones this call won."""
        if not requests:
            return []
        now = utcnow()
        # Rows go in in one global order (schedule, time): two claimers whose batches
        # overlap in different orders would otherwise deadlock on the unique index.
        requests = sorted(requests, key=lambda r: (r.schedule, as_utc(r.scheduled_for)))
        values = [
            {
                "schedule": r.schedule,
                "scheduled_for": r.scheduled_for,
                "kind": r.kind,
                "status": r.status,
                "message_id": str(uuid.uuid4()),
                "message": r.message,
                "fired_by": self.instance_id,
                "created_at": now,
                "finished_at": now if r.status != "pending" else None,
                "error": r.error,
            }
            for r in requests
        ]
        # One statement with many parameter sets (SQLAlchemy's "insertmanyvalues"): compiled
        # once and cached, sent as multi-row INSERTs; a literal multi-VALUES statement
        # would be compiled anew for every batch, which cost more than running it.
        stmt = (
            upsert(self.engine, fires.name)
            .on_conflict_do_nothing(index_elements=["schedule", "scheduled_for"])
            .returning(
                fires.c.id,
                fires.c.schedule,
                fires.c.scheduled_for,
                fires.c.status,
                fires.c.message_id,
                fires.c.message,
            )
        )
        with self.engine.begin() as conn:
            rows = conn.execute(stmt, values).all()
        metrics.record_claim(requests, rows)
        return [
            Fire(r.id, r.schedule, as_utc(r.scheduled_for), r.message_id, r.message)  # type: ignore[arg-type]
            for r in rows
            if r.status == "pending"
        ]

    def mark_enqueued(self, ids: list[int]) -> None:
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(fires)
                .where(and_(fires.c.id.in_(ids), fires.c.status == "pending"))
                .values(status="enqueued", enqueued_at=utcnow())
            )

    def pending(self, older_than: float, limit: int = 500) -> list[Fire]:
        """Rows left pending (a crash or a broker outage between insert and send)."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        stmt = (
            select(
                fires.c.id,
                fires.c.schedule,
                fires.c.scheduled_for,
                fires.c.message_id,
                fires.c.message,
            )
            .where(and_(fires.c.status == "pending", fires.c.created_at < cutoff))
            .order_by(fires.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            Fire(r.id, r.schedule, as_utc(r.scheduled_for), r.message_id, r.message)  # type: ignore[arg-type]
            for r in rows
        ]
