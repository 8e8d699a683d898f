"""vocabulary in CHECK constraints, fires.error_type, a jobs table that names no module

- CHECK constraints hold fire status and kind, attempt status and incident kind to the
  values of services/vocabulary.py (as of this revision: a migration is history, so the
  values are written out here, not imported).
- ``cronwork_fires.error_type``: the exception type of a fire's last failed attempt, split
  out of ``error`` (which held ``"Type: message"``).
- ``apscheduler_jobs.job_state``: from APScheduler's pickled Job (which names
  ``services.scheduler:job_placeholder`` and ``services.cron.CrontabTrigger``, modules that
  no longer exist: the stock jobstore would delete such rows, and every overdue fire with
  them) to ``{"format": 1, "fingerprint": ...}``. ``next_run_time`` is kept as it is, so
  every schedule keeps its next run and nothing overdue is lost.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import io
import json
import pickle
import re
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FIRE_STATUSES = (
    "pending",
    "enqueued",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "timed_out",
    "skipped",
    "missed",
    "abandoned",
)
FIRE_KINDS = ("scheduled", "catchup", "manual")
ATTEMPT_STATUSES = (
    "running",
    "succeeded",
    "retrying",
    "failed",
    "timed_out",
    "skipped",
    "abandoned",
)
INCIDENT_KINDS = ("overdue", "stuck", "lost", "never_enqueued", "missed", "failed")

CHECKS = (
    ("cronwork_fires", "status", FIRE_STATUSES),
    ("cronwork_fires", "kind", FIRE_KINDS),
    ("cronwork_attempts", "status", ATTEMPT_STATUSES),
    ("cronwork_incidents", "kind", INCIDENT_KINDS),
)

#: "RuntimeError: message" as 0.1.0 stored a failed fire's error.
_TYPED_ERROR = re.compile(r"(?P<type>[A-Za-z_][A-Za-z0-9_.]*): (?P<message>.*)", re.DOTALL)

jobs = sa.table(
    "apscheduler_jobs",
    sa.column("id", sa.String),
    sa.column("job_state", sa.LargeBinary),
)
fires = sa.table(
    "cronwork_fires",
    sa.column("id", sa.BigInteger),
    sa.column("status", sa.String),
    sa.column("error", sa.Text),
    sa.column("error_type", sa.String),
)


def upgrade() -> None:
    for table, column, values in CHECKS:
        listed = ", ".join(f"'{v}'" for v in values)
        with op.batch_alter_table(table) as batch:
            batch.create_check_constraint(op.f(f"ck_{table}_{column}"), f"{column} IN ({listed})")
    with op.batch_alter_table("cronwork_fires") as batch:
        batch.add_column(sa.Column("error_type", sa.String(length=200), nullable=True))
    _split_fire_errors()
    _jobs_to_json()


def downgrade() -> None:
    with op.batch_alter_table("cronwork_fires") as batch:
        batch.drop_column("error_type")
    for table, column, _values in CHECKS:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_{column}"), type_="check")
    # 0.1.0 cannot read the JSON job state, and its pickled form names modules this
    # release no longer has: empty the table, and the old release's sync re-adds every
    # job from now (fires overdue at that moment are not caught up).
    op.execute(jobs.delete())


def _split_fire_errors() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(fires.c.id, fires.c.error).where(
            sa.and_(
                fires.c.status.in_(("failed", "timed_out", "retrying")),
                fires.c.error.is_not(None),
            )
        )
    ).all()
    updates = []
    for row in rows:
        match = _TYPED_ERROR.fullmatch(row.error)
        if match:
            updates.append({"fire_id": row.id, "etype": match["type"], "emsg": match["message"]})
    if updates:
        conn.execute(
            fires.update()
            .where(fires.c.id == sa.bindparam("fire_id"))
            .values(error_type=sa.bindparam("etype"), error=sa.bindparam("emsg")),
            updates,
        )


class _Anything:
    """Stands in for every class a 0.1.0 job pickle names: nothing of it is imported or run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Anything:
        return _Anything()

    def __setstate__(self, state: Any) -> None:
        pass


class _Inert(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _Anything


def _fingerprint(raw: bytes) -> str | None:
    """The trigger fingerprint 0.1.0 kept in ``Job.kwargs`` (a plain dict of strings)."""
    try:
        state = _Inert(io.BytesIO(bytes(raw))).load()
    except Exception:
        return None
    kwargs = state.get("kwargs") if isinstance(state, dict) else None
    value = kwargs.get("fingerprint") if isinstance(kwargs, dict) else None
    return value if isinstance(value, str) else None


def _jobs_to_json() -> None:
    conn = op.get_bind()
    updates = []
    for row in conn.execute(sa.select(jobs.c.id, jobs.c.job_state)).all():
        raw = bytes(row.job_state)
        if raw.startswith(b"{"):
            continue  # already JSON
        fingerprint = _fingerprint(raw)
        # An unreadable row keeps its next_run_time; an empty fingerprint makes the next
        # sync reschedule it (it could not be read by anyone anyway).
        state = {"format": 1, "fingerprint": fingerprint or ""}
        updates.append({"job_id": row.id, "state": json.dumps(state).encode()})
    if updates:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == sa.bindparam("job_id"))
            .values(job_state=sa.bindparam("state")),
            updates,
        )
