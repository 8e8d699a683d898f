"""tracked ad-hoc runs: fire kind ``adhoc``, the actor, an idempotency key

- The CHECK on ``cronwork_fires.kind`` (0003) gains ``adhoc`` (services/vocabulary.py
  ``FireKind.ADHOC``, services/adhoc.py). Values written out: a migration is history.
- ``cronwork_fires.actor`` and ``cronwork_fires.idempotency_key``: set for ad-hoc runs
  only; the key is unique where it is set (a partial unique index).
- Two partial indexes for ``cronwork history`` filters: (actor, scheduled_for) where an
  actor is set, and (kind, scheduled_for) for the kinds other than ``scheduled``. Partial,
  so scheduled fires (nearly every row, updated on every attempt) are in neither.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KINDS_BEFORE = ("scheduled", "catchup", "manual")
KINDS_AFTER = (*KINDS_BEFORE, "adhoc")
NAME = "ck_cronwork_fires_kind"
TABLE = "cronwork_fires"


def _replace(kinds: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{k}'" for k in kinds)
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f(NAME), type_="check")
        batch.create_check_constraint(op.f(NAME), f"kind IN ({listed})")


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(sa.Column("actor", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
    _replace(KINDS_AFTER)
    for name, columns, where, unique in (
        ("uq_cronwork_fires_idempotency_key", ["idempotency_key"], _KEY_SET, True),
        ("ix_cronwork_fires_actor_time", ["actor", "scheduled_for"], _ACTOR_SET, False),
        ("ix_cronwork_fires_kind_time", ["kind", "scheduled_for"], _NOT_SCHEDULED, False),
    ):
        op.create_index(
            name,
            TABLE,
            columns,
            unique=unique,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )


def downgrade() -> None:
    # Ad-hoc runs cannot stay under the old constraint (their attempts go with them).
    op.execute("DELETE FROM cronwork_fires WHERE kind = 'adhoc'")
    for name in (
        "ix_cronwork_fires_kind_time",
        "ix_cronwork_fires_actor_time",
        "uq_cronwork_fires_idempotency_key",
    ):
        op.drop_index(name, table_name=TABLE)
    _replace(KINDS_BEFORE)
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("idempotency_key")
        batch.drop_column("actor")


_KEY_SET = "idempotency_key IS NOT NULL"
_ACTOR_SET = "actor IS NOT NULL"
_NOT_SCHEDULED = "kind <> 'scheduled'"
