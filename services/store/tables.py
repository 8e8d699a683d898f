"""The database schema, as SQLAlchemy Core tables. Alembic migrations must match it.

Timestamps are stored in UTC. SQLite (embedded mode) returns them naive; read them
through ``services.timeutil.as_utc``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from services.timeutil import utcnow
from services.vocabulary import (
    UNFINISHED_FIRE_STATUSES,
    AttemptStatus,
    AuditAction,
    FireKind,
    FireStatus,
    IncidentKind,
)

#: Explicit constraint names so Alembic migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

metadata = MetaData(naming_convention=NAMING)

Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER only
Json = JSON().with_variant(JSONB(), "postgresql")
Tz = DateTime(timezone=True)


def _listed(values: Iterable[StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


def _one_of(column: str, values: type[StrEnum], name: str) -> CheckConstraint:
    """A CHECK that ``column`` holds a member of ``values`` (the vocabulary, in the database)."""
    return CheckConstraint(f"{column} IN ({_listed(values)})", name=name)


schedules = Table(
    "cronwork_schedules",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("actor", String(200), nullable=False),
    Column("trigger", String(300), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("spec", Json, nullable=False),
    Column("fingerprint", String(32), nullable=False),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("paused_at", Tz),
    Column("created_at", Tz, nullable=False),
    Column("updated_at", Tz, nullable=False),
    Column("paused_reason", Text),
    # A pause with an end: the leader fires again after it, and records the resume once.
    Column("paused_until", Tz),
    Column("paused_by", String(200)),
    Index("ix_cronwork_schedules_paused_until", "paused_until"),
)

fires = Table(
    "cronwork_fires",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("schedule", String(64), nullable=False),
    # The trigger's own time (never "now"): with `schedule` it is the fence.
    Column("scheduled_for", Tz, nullable=False),
    Column("kind", String(16), nullable=False),  # services.vocabulary.FireKind
    Column("status", String(16), nullable=False),  # services.vocabulary.FireStatus
    # Chosen when the row is written, so a re-send is the same message.
    Column("message_id", String(36), nullable=False),
    # Exactly what to send (actor, queue, args, kwargs, options): re-sends need nothing else.
    Column("message", Json, nullable=False),
    Column("fired_by", String(200)),
    Column("created_at", Tz, nullable=False),
    Column("enqueued_at", Tz),
    Column("started_at", Tz),
    Column("finished_at", Tz),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("error", Text),
    # The exception's type name of the last attempt (``error`` holds its message).
    Column("error_type", String(200)),
    # When the row last changed (every SQLAlchemy write sets it; the worker's raw SQL too):
    # how long a fire has waited in its current state.
    Column("updated_at", Tz, nullable=False, default=utcnow, onupdate=utcnow),
    # A re-run (a manual fire made for a failed one) names the fire it re-runs. No foreign
    # key: retention deletes old fires, and a re-run outlives the fire it names.
    Column("rerun_of", Id),
    # Ad-hoc runs only (services/adhoc.py): the actor sent, and the caller's idempotency
    # key. NULL for schedule fires (their actor is their schedule's), so the indexes below
    # hold ad-hoc runs only and cost the scheduled fires' hot path nothing.
    Column("actor", String(200)),
    Column("idempotency_key", String(200)),
    _one_of("status", FireStatus, "status"),
    _one_of("kind", FireKind, "kind"),
    UniqueConstraint("schedule", "scheduled_for", name="uq_cronwork_fires_schedule_time"),
    Index("ix_cronwork_fires_status_created", "status", "created_at"),
    Index("ix_cronwork_fires_scheduled_for", "scheduled_for"),
    # Fires still owed an outcome: few, looked at by the leader every pass.
    Index(
        "ix_cronwork_fires_unfinished",
        "updated_at",
        postgresql_where=text(f"status IN ({_listed(sorted(UNFINISHED_FIRE_STATUSES))})"),
        sqlite_where=text(f"status IN ({_listed(sorted(UNFINISHED_FIRE_STATUSES))})"),
    ),
    Index("ix_cronwork_fires_message_id", "message_id", unique=True),
    Index("ix_cronwork_fires_rerun_of", "rerun_of"),
    # One run per idempotency key: the second send of a key learns who holds it.
    Index(
        "uq_cronwork_fires_idempotency_key",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
        sqlite_where=text("idempotency_key IS NOT NULL"),
    ),
    # `history --actor` (ad-hoc runs; schedule fires are found by their schedule names).
    Index(
        "ix_cronwork_fires_actor_time",
        "actor",
        "scheduled_for",
        postgresql_where=text("actor IS NOT NULL"),
        sqlite_where=text("actor IS NOT NULL"),
    ),
    # `history --kind` for the rare kinds; `scheduled` is most rows: the time index serves it.
    Index(
        "ix_cronwork_fires_kind_time",
        "kind",
        "scheduled_for",
        postgresql_where=text(f"kind <> '{FireKind.SCHEDULED.value}'"),
        sqlite_where=text(f"kind <> '{FireKind.SCHEDULED.value}'"),
    ),
)

#: One row per delivery of a fire's message that ran (or was refused, ``skipped``).
attempts = Table(
    "cronwork_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False),
    # 0-based: the delivery's Dramatiq retries plus the fire's re-sends after a lost worker
    # (services/fire_message.py). Unique per message among attempts that ran: the claim.
    Column("attempt", Integer, nullable=False),
    Column(
        "fire_id",
        Id,
        ForeignKey("cronwork_fires.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("schedule", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", Tz, nullable=False),
    Column("finished_at", Tz),
    Column("duration_ms", Integer),
    Column("instance_id", String(200), nullable=False),
    Column("error_type", String(200)),
    Column("error_message", Text),
    Column("traceback", Text),
    Column("result", Json),
    # Set when the watchdog gave the attempt up (its worker stopped heartbeating); kept
    # when a late outcome arrives anyway, so both facts stay on record.
    Column("abandoned_at", Tz),
    Index(
        "uq_cronwork_attempts_claim",
        "message_id",
        "attempt",
        unique=True,
        postgresql_where=text(f"status <> '{AttemptStatus.SKIPPED.value}'"),
        sqlite_where=text(f"status <> '{AttemptStatus.SKIPPED.value}'"),
    ),
    Index("ix_cronwork_attempts_fire_id", "fire_id"),
    # The watchdog scans running attempts on every pass; they are few among millions.
    Index(
        "ix_cronwork_attempts_running",
        "instance_id",
        postgresql_where=text(f"status = '{AttemptStatus.RUNNING.value}'"),
        sqlite_where=text(f"status = '{AttemptStatus.RUNNING.value}'"),
    ),
    _one_of("status", AttemptStatus, "status"),
)

instances = Table(
    "cronwork_instances",
    metadata,
    Column("instance_id", String(200), primary_key=True),
    Column("role", String(16), nullable=False),  # scheduler | worker
    Column("hostname", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Tz, nullable=False),
    Column("heartbeat_at", Tz, nullable=False),
    Column("leader_since", Tz),  # set while this scheduler holds the lease
    Column("stopped_at", Tz),
)

#: APScheduler 3's SQLAlchemyJobStore table, created here so migrations own the schema.
#: ``job_state`` holds JSON naming no module (services/scheduler/jobstore.py).
apscheduler_jobs = Table(
    "apscheduler_jobs",
    metadata,
    Column("id", String(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)

#: One row per incident: opened once, repeats folded into it (count), resolved once.
incidents = Table(
    "cronwork_incidents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(24), nullable=False),
    Column("schedule", String(64), nullable=False),
    # The newest fire this incident covers: a repeat folds in only for a newer fire.
    Column("fire_id", Id),
    Column("subject", String(200)),  # what it is about, for people: "fire 12 attempt 2"
    Column("opened_at", Tz, nullable=False),
    Column("last_seen_at", Tz, nullable=False),
    Column("resolved_at", Tz),
    Column("count", Integer, nullable=False, server_default=text("1")),
    Column("last_notified_at", Tz),  # NULL: the opening message is not delivered yet
    Column("recovery_notified_at", Tz),
    Column("details", Json, nullable=False),
    Column("sentry_event_id", String(64)),
    # At most one open incident per (kind, schedule): repeats fold into it.
    Index(
        "uq_cronwork_incidents_open",
        "kind",
        "schedule",
        unique=True,
        postgresql_where=text("resolved_at IS NULL"),
        sqlite_where=text("resolved_at IS NULL"),
    ),
    Index("ix_cronwork_incidents_opened_at", "opened_at"),
    _one_of("kind", IncidentKind, "kind"),
)

#: Who did what to which schedule, when and why: every dashboard, API and CLI action, and
#: the automatic resume when a pause runs out. Never pruned with history.
audit = Table(
    "cronwork_audit",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", Tz, nullable=False),
    # "web:alice", "api:admin", "cli:root@host", "cronwork" (an automatic resume).
    Column("who", String(200), nullable=False),
    Column("action", String(16), nullable=False),  # services.vocabulary.AuditAction
    Column("schedule", String(64), nullable=False),
    # The fire an action made (trigger, rerun).
    Column("fire_id", Id),
    Column("reason", Text),
    Column("details", Json, nullable=False),
    Index("ix_cronwork_audit_schedule_id", "schedule", "id"),
    _one_of("action", AuditAction, "action"),
)
