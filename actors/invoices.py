"""Generate monthly invoices (the 1st, 06:00 UTC)."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from actors._store import engine, invoices, sessions
from services.context import current_fire
from services.timeutil import utcnow


@dramatiq.actor
def generate_monthly_invoices() -> dict[str, object]:
    """Invoice last month for every account. Idempotent: (account, month) is unique, so a
    retry after a partial run only adds the invoices still missing."""
    fire = current_fire()
    at = fire.scheduled_for if fire else utcnow()
    month = (at.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    eng = engine()
    dialect = postgresql if eng.dialect.name == "postgresql" else sqlite
    created = 0
    with eng.begin() as conn:
        accounts = [
            f"user-{r.user_id}" for r in conn.execute(select(sessions.c.user_id).distinct())
        ]
        for account in accounts:
            stmt = dialect.insert(invoices).values(account=account, month=month)
            created += conn.execute(stmt.on_conflict_do_nothing()).rowcount
    return {"month": month, "created": created}
