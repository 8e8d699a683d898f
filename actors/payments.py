"""Retry failed payment charges (hourly)."""

from __future__ import annotations

import dramatiq
from sqlalchemy import and_, update

from actors._store import engine, payments

#: After this many tries a payment is left for a human.
MAX_TRIES = 5


@dramatiq.actor
def retry_failed_payments() -> dict[str, int]:
    with engine().begin() as conn:
        retried = conn.execute(
            update(payments)
            .where(and_(payments.c.status == "failed", payments.c.tries < MAX_TRIES))
            .values(status="retrying", tries=payments.c.tries + 1)
        ).rowcount
        given_up = conn.execute(
            update(payments)
            .where(and_(payments.c.status == "failed", payments.c.tries >= MAX_TRIES))
            .values(status="abandoned")
        ).rowcount
    return {"retried": retried, "abandoned": given_up}
