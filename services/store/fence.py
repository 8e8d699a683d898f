"""The fence: one row per (schedule, scheduled time), written before any message is sent.

``INSERT … ON CONFLICT DO NOTHING RETURNING`` returns only the rows this caller
won, so two schedulers that both believe they lead still fire each time once
(docs/design.md, the fence). Rows start ``pending``; they become ``enqueued`` once the
broker has the message, and the leader re-sends rows left pending (docs/design.md, sending).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from psycopg2.extras import Json as PgJson
from psycopg2.extras import execute_values
from sqlalchemy import Connection, Engine, and_, select, update

from services import metrics
from services.fire_message import build_message, retry_options
from services.schedules.spec import ScheduleSpec
from services.store.engines import upsert
from services.store.tables import fires
from services.timeutil import as_utc, utcnow
from services.vocabulary import FireKind, FireStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FireRequest:
    schedule: str
    scheduled_for: datetime
    kind: FireKind
    #: pending (to be sent), or skipped / missed (recorded by the catch-up policy, not run)
    status: FireStatus
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


def request(
    spec: ScheduleSpec,
    scheduled_for: datetime,
    kind: FireKind,
    status: FireStatus = FireStatus.PENDING,
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
                "finished_at": now if r.status != FireStatus.PENDING else None,
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
            # Not the message: the won rows hold what this call wrote, and reading 10,000
            # JSON documents back cost a tenth of a burst's claim (py-spy).
            .returning(fires.c.id, fires.c.schedule, fires.c.scheduled_for, fires.c.status)
        )
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                rows: Sequence[Any] = _insert_pg(conn, values, now)
            else:
                rows = conn.execute(stmt, values).all()
        metrics.record_claim(requests, rows)
        written = {
            (r.schedule, as_utc(r.scheduled_for)): v for r, v in zip(requests, values, strict=True)
        }
        won = []
        for r in rows:
            if r.status == FireStatus.PENDING:
                at = as_utc(r.scheduled_for)
                v = written[(r.schedule, at)]
                won.append(Fire(r.id, r.schedule, at, v["message_id"], v["message"]))  # type: ignore[arg-type]
        return won

    def mark_enqueued(self, ids: list[int]) -> None:
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(fires)
                .where(and_(fires.c.id.in_(ids), fires.c.status == FireStatus.PENDING))
                .values(status=FireStatus.ENQUEUED, enqueued_at=utcnow())
            )

    def pending(
        self, older_than: float, limit: int = 500, now: datetime | None = None
    ) -> list[Fire]:
        """Rows left pending (a crash or a broker outage between insert and send)."""
        cutoff = (now or utcnow()) - timedelta(seconds=older_than)
        stmt = (
            select(
                fires.c.id,
                fires.c.schedule,
                fires.c.scheduled_for,
                fires.c.message_id,
                fires.c.message,
            )
            .where(and_(fires.c.status == FireStatus.PENDING, fires.c.created_at < cutoff))
            .order_by(fires.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            Fire(r.id, r.schedule, as_utc(r.scheduled_for), r.message_id, r.message)  # type: ignore[arg-type]
            for r in rows
        ]

    def waiting(self, unchanged_for: timedelta, limit: int = 1000) -> list[Waiting]:
        """Fires whose message should be in the broker: enqueued (queued, or taken by a
        worker that has not claimed it yet), or retrying (the retry waits there, delayed).
        Only those unchanged for ``unchanged_for``: fresh ones are still on their way."""
        cutoff = utcnow() - unchanged_for
        stmt = (
            select(
                fires.c.id,
                fires.c.schedule,
                fires.c.message_id,
                fires.c.status,
                fires.c.attempts,
                fires.c.message,
                fires.c.updated_at,
            )
            .where(
                and_(
                    fires.c.status.in_((FireStatus.ENQUEUED, FireStatus.RETRYING)),
                    fires.c.updated_at < cutoff,
                )
            )
            .order_by(fires.c.updated_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                Waiting(
                    r.id,
                    r.schedule,
                    r.message_id,
                    FireStatus(r.status),
                    r.attempts,
                    r.message,
                    as_utc(r.updated_at),  # type: ignore[arg-type]
                )
                for r in conn.execute(stmt)
            ]

    def requeue_lost(self, fire: Waiting, reason: str) -> bool:
        """Put a fire whose message the broker lost back to ``pending``, to be sent again
        with the same message id, unless it moved on meanwhile (compare and set)."""
        message = fire.message
        if fire.attempts:
            # Sent again as the attempt after the newest one, whatever the stored message
            # counted: the retry that waited (retrying), or the re-send of an attempt whose
            # worker died (enqueued again). An older number would be skipped as a
            # duplicate at every delivery and the fire never run.
            message = {**message, "options": retry_options(message["options"], fire.attempts)}
        with self.engine.begin() as conn:
            done = conn.execute(
                update(fires)
                .where(
                    and_(
                        fires.c.id == fire.id,
                        fires.c.status == fire.status,
                        fires.c.attempts == fire.attempts,
                    )
                )
                .values(status=FireStatus.PENDING, message=message, error=reason)
            )
        return done.rowcount == 1


#: What ``_insert_pg`` writes: the columns ``claim`` fills, and ``updated_at`` (a Python-side
#: default that SQLAlchemy would have filled in).
_PG_COLUMNS = (
    "schedule",
    "scheduled_for",
    "kind",
    "status",
    "message_id",
    "message",
    "fired_by",
    "created_at",
    "finished_at",
    "error",
    "updated_at",
)
_PG_CLAIM = (
    f"INSERT INTO {fires.name} ({', '.join(_PG_COLUMNS)}) VALUES %s"
    " ON CONFLICT (schedule, scheduled_for) DO NOTHING"
    " RETURNING id, schedule, scheduled_for, status"
)


class _Claimed(NamedTuple):
    id: int
    schedule: str
    scheduled_for: datetime
    status: str


def _insert_pg(conn: Connection, values: list[dict[str, Any]], now: datetime) -> list[_Claimed]:
    """The claim's INSERT on Postgres: one multi-row statement by psycopg2's
    ``execute_values``, a third faster than SQLAlchemy's insertmanyvalues for a burst's
    500-row chunks (most of that was building SQLAlchemy's parameters row by row)."""
    rows = [
        tuple(PgJson(v[c]) if c == "message" else v.get(c, now) for c in _PG_COLUMNS)
        for v in values
    ]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        result = execute_values(cursor, _PG_CLAIM, rows, page_size=len(rows), fetch=True)
    finally:
        cursor.close()
    return [_Claimed(*r) for r in result]


@dataclass(frozen=True)
class Waiting:
    """A fire whose message should be in the broker."""

    id: int
    schedule: str
    message_id: str
    status: FireStatus
    #: The newest claimed attempt's number plus one.
    attempts: int
    message: dict[str, Any]
    updated_at: datetime
