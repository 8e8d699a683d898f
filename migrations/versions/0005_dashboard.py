"""dashboard: an audit table, pauses with a reason and an end, re-runs of failed fires

- ``cronwork_audit``: who did what to which schedule, when and why (dashboard, API and
  CLI actions, and the automatic resume when a pause runs out). Its action is held to
  the vocabulary by a CHECK constraint, as 0003 does for the other vocabularies (values
  written out: a migration is history).
- ``cronwork_schedules``: ``paused_reason``, ``paused_until`` (the leader fires again
  after it), ``paused_by``.
- ``cronwork_fires.rerun_of``: a re-run is a new manual fire naming the failed one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

AUDIT_ACTIONS = ("trigger", "rerun", "pause", "resume", "auto_resume")

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    listed = ", ".join(f"'{v}'" for v in AUDIT_ACTIONS)
    op.create_table(
        "cronwork_audit",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("at", _TZ, nullable=False),
        sa.Column("who", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("schedule", sa.String(length=64), nullable=False),
        sa.Column("fire_id", _ID, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", _JSON, nullable=False),
        sa.CheckConstraint(f"action IN ({listed})", name=op.f("ck_cronwork_audit_action")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cronwork_audit")),
    )
    op.create_index(
        "ix_cronwork_audit_schedule_id", "cronwork_audit", ["schedule", "id"], unique=False
    )
    with op.batch_alter_table("cronwork_schedules") as batch:
        batch.add_column(sa.Column("paused_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("paused_until", _TZ, nullable=True))
        batch.add_column(sa.Column("paused_by", sa.String(length=200), nullable=True))
        batch.create_index("ix_cronwork_schedules_paused_until", ["paused_until"], unique=False)
    with op.batch_alter_table("cronwork_fires") as batch:
        batch.add_column(sa.Column("rerun_of", _ID, nullable=True))
        batch.create_index("ix_cronwork_fires_rerun_of", ["rerun_of"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cronwork_fires") as batch:
        batch.drop_index("ix_cronwork_fires_rerun_of")
        batch.drop_column("rerun_of")
    with op.batch_alter_table("cronwork_schedules") as batch:
        batch.drop_index("ix_cronwork_schedules_paused_until")
        batch.drop_column("paused_by")
        batch.drop_column("paused_until")
        batch.drop_column("paused_reason")
    op.drop_index("ix_cronwork_audit_schedule_id", table_name="cronwork_audit")
    op.drop_table("cronwork_audit")
