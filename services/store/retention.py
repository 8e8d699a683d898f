"""Delete history older than the retention period, in small batches.

Months of per-minute fires are millions of rows; the leader trims them a batch at a
time so no delete holds locks for long or stalls the loop that renews its lease.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy import Engine, and_, delete, select

from services.store.tables import attempts, fires, incidents
from services.vocabulary import FINAL_FIRE_STATUSES

logger = logging.getLogger(__name__)

#: Fires deleted per statement.
BATCH = 2000


def prune(engine: Engine, before: datetime, *, budget_seconds: float = 2.0) -> int:
    """Delete finished fires scheduled before ``before`` (with their attempts) and
    incidents resolved before it. Stops after ``budget_seconds``; returns fires deleted."""
    deadline = time.monotonic() + budget_seconds
    total = 0
    while time.monotonic() < deadline:
        with engine.begin() as conn:
            ids = [
                r.id
                for r in conn.execute(
                    select(fires.c.id)
                    .where(
                        and_(
                            fires.c.scheduled_for < before,
                            fires.c.status.in_(FINAL_FIRE_STATUSES),
                        )
                    )
                    .limit(BATCH)
                )
            ]
            if not ids:
                break
            # Explicitly, not by ON DELETE CASCADE: SQLite does not enforce foreign keys.
            conn.execute(delete(attempts).where(attempts.c.fire_id.in_(ids)))
            conn.execute(delete(fires).where(fires.c.id.in_(ids)))
        total += len(ids)
    with engine.begin() as conn:
        conn.execute(
            delete(incidents).where(
                and_(incidents.c.resolved_at.is_not(None), incidents.c.resolved_at < before)
            )
        )
    if total:
        logger.info(
            "deleted %d fire(s) older than %s", total, before, extra={"action": "history_pruned"}
        )
    return total
