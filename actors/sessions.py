"""Clean up expired sessions (daily at 02:00 UTC)."""

from __future__ import annotations

import dramatiq
from sqlalchemy import delete

from actors._store import engine, sessions
from services.timeutil import utcnow


@dramatiq.actor
def cleanup_expired_sessions(batch_size: int = 10_000) -> dict[str, int]:
    """Delete sessions that expired; in batches so one run never holds a long lock."""
    deleted = 0
    with engine().begin() as conn:
        expired = (
            sessions.select()
            .with_only_columns(sessions.c.id)
            .where(sessions.c.expires_at < utcnow())
            .limit(batch_size)
        )
        ids = [r.id for r in conn.execute(expired)]
        if ids:
            deleted = conn.execute(delete(sessions).where(sessions.c.id.in_(ids))).rowcount
    return {"deleted": deleted}
