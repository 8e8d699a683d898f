"""exclusive claims: attempts get an id, (message, attempt) is unique among runs; fires.updated_at

- ``cronwork_attempts`` gets a surrogate ``id`` primary key. ``(message_id, attempt)`` stays
  unique among attempts that ran (a partial unique index excluding ``skipped``): that index
  is the claim, so two deliveries of one attempt never both run, while the duplicate is
  still recorded, as a skipped attempt with its reason.
- ``cronwork_attempts.traceback`` and ``abandoned_at`` (a late outcome of an attempt the
  watchdog gave up on keeps both facts).
- ``cronwork_fires.updated_at``: when the fire last changed status (backfilled from the
  times it has), with a partial index over the fires still owed an outcome.
- A new incident kind, ``unfinished``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INCIDENT_KINDS_BEFORE = ("overdue", "stuck", "lost", "never_enqueued", "missed", "failed")
INCIDENT_KINDS = (*INCIDENT_KINDS_BEFORE, "unfinished")
UNFINISHED = "'enqueued', 'pending', 'retrying', 'running'"

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("pk_cronwork_attempts", "cronwork_attempts", type_="primary")
        op.execute("ALTER TABLE cronwork_attempts ADD COLUMN id BIGSERIAL NOT NULL")
        op.create_primary_key("pk_cronwork_attempts", "cronwork_attempts", ["id"])
        op.add_column("cronwork_attempts", sa.Column("traceback", sa.Text(), nullable=True))
        op.add_column(
            "cronwork_attempts",
            sa.Column("abandoned_at", sa.DateTime(timezone=True), nullable=True),
        )
    else:
        # SQLite cannot change a primary key in place: rebuild the table, rows numbered anew.
        with op.batch_alter_table(
            "cronwork_attempts",
            recreate="always",
            table_kwargs={"sqlite_autoincrement": False},
        ) as batch:
            batch.drop_constraint("pk_cronwork_attempts", type_="primary")
            batch.add_column(sa.Column("id", sa.Integer(), nullable=True))
            batch.add_column(sa.Column("traceback", sa.Text(), nullable=True))
            batch.add_column(sa.Column("abandoned_at", sa.DateTime(timezone=True), nullable=True))
        _sqlite_rekey_attempts()
    op.create_index(
        "uq_cronwork_attempts_claim",
        "cronwork_attempts",
        ["message_id", "attempt"],
        unique=True,
        postgresql_where=sa.text("status <> 'skipped'"),
        sqlite_where=sa.text("status <> 'skipped'"),
    )
    op.drop_index("ix_cronwork_attempts_status", table_name="cronwork_attempts")
    op.create_index(
        "ix_cronwork_attempts_running",
        "cronwork_attempts",
        ["instance_id"],
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )

    with op.batch_alter_table("cronwork_fires") as batch:
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE cronwork_fires SET updated_at = "
        "COALESCE(finished_at, started_at, enqueued_at, created_at)"
    )
    with op.batch_alter_table("cronwork_fires") as batch:
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index(
        "ix_cronwork_fires_unfinished",
        "cronwork_fires",
        ["updated_at"],
        postgresql_where=sa.text(f"status IN ({UNFINISHED})"),
        sqlite_where=sa.text(f"status IN ({UNFINISHED})"),
    )
    _replace_incident_kinds(INCIDENT_KINDS)


def downgrade() -> None:
    _replace_incident_kinds(INCIDENT_KINDS_BEFORE, delete_others=True)
    op.drop_index("ix_cronwork_fires_unfinished", table_name="cronwork_fires")
    with op.batch_alter_table("cronwork_fires") as batch:
        batch.drop_column("updated_at")
    op.drop_index("ix_cronwork_attempts_running", table_name="cronwork_attempts")
    op.drop_index("uq_cronwork_attempts_claim", table_name="cronwork_attempts")
    # Skipped duplicates share (message_id, attempt) with the attempt that ran: 0.2's key
    # has no room for them.
    op.execute("DELETE FROM cronwork_attempts WHERE status = 'skipped'")
    with op.batch_alter_table("cronwork_attempts", recreate="always") as batch:
        batch.drop_constraint("pk_cronwork_attempts", type_="primary")
        batch.drop_column("id")
        batch.drop_column("traceback")
        batch.drop_column("abandoned_at")
        batch.create_primary_key("pk_cronwork_attempts", ["message_id", "attempt"])
    op.create_index("ix_cronwork_attempts_status", "cronwork_attempts", ["status"])


def _sqlite_rekey_attempts() -> None:
    """Make ``id`` the INTEGER PRIMARY KEY (rowid) of the rebuilt SQLite table."""
    op.execute("UPDATE cronwork_attempts SET id = rowid")
    with op.batch_alter_table("cronwork_attempts", recreate="always") as batch:
        batch.alter_column("id", existing_type=sa.Integer(), nullable=False)
        batch.create_primary_key("pk_cronwork_attempts", ["id"])


def _replace_incident_kinds(kinds: tuple[str, ...], *, delete_others: bool = False) -> None:
    listed = ", ".join(f"'{k}'" for k in kinds)
    if delete_others:
        op.execute(f"DELETE FROM cronwork_incidents WHERE kind NOT IN ({listed})")
    with op.batch_alter_table("cronwork_incidents") as batch:
        batch.drop_constraint(op.f("ck_cronwork_incidents_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_cronwork_incidents_kind"), f"kind IN ({listed})")
