"""incident kind ``broken``: a schedule whose trigger fails at run time

The CHECK constraint on ``cronwork_incidents.kind`` (0003) gains ``broken``
(services/vocabulary.py ``IncidentKind.BROKEN``, services/scheduler/broken.py). The values
are written out here, not imported: a migration is history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KINDS_BEFORE = (
    "overdue",
    "stuck",
    "lost",
    "never_enqueued",
    "missed",
    "failed",
    "unfinished",
)
KINDS_AFTER = (*KINDS_BEFORE, "broken")
NAME = "ck_cronwork_incidents_kind"


def _replace(kinds: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{k}'" for k in kinds)
    with op.batch_alter_table("cronwork_incidents") as batch:
        batch.drop_constraint(op.f(NAME), type_="check")
        batch.create_check_constraint(op.f(NAME), f"kind IN ({listed})")


def upgrade() -> None:
    _replace(KINDS_AFTER)


def downgrade() -> None:
    # Incidents of the new kind cannot stay under the old constraint.
    op.execute("DELETE FROM cronwork_incidents WHERE kind = 'broken'")
    _replace(KINDS_BEFORE)
