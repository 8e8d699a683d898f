"""The JSON API's shapes, for the OpenAPI document and response validation.

They describe the dicts built by services/store/views.py and services/store/pages.py
(the same ones ``cronwork status|history|incidents|audit --json`` print); a field added
there is added here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.vocabulary import AttemptStatus, AuditAction, FireKind, FireStatus, IncidentKind

#: Fire kinds are read back as stored: newer kinds (e.g. ad-hoc runs) must not break reads.
Kind = FireKind | str


class Leader(BaseModel):
    instance_id: str
    since: str | None


class Pause(BaseModel):
    at: str | None
    by: str | None
    reason: str | None
    until: str | None


class LastFire(BaseModel):
    id: int
    scheduled_for: str | None
    status: FireStatus
    duration_ms: int | None


class StripItem(BaseModel):
    id: int
    scheduled_for: str | None
    status: FireStatus


class OpenIncident(BaseModel):
    id: int
    kind: IncidentKind


class ScheduleRow(BaseModel):
    name: str
    actor: str
    trigger: str = Field(description="as written: `cron 0 8 * * 1`, `every 15s`, `at ...`")
    trigger_text: str = Field(description="in plain words; the raw form where words mislead")
    timezone: str
    enabled: bool
    paused: bool
    pause: Pause | None
    next_run: str | None
    broken: str | None = Field(
        description="why its fire times cannot be computed now (it is skipped, with an "
        "incident), else null"
    )
    last_fire: LastFire | None
    last_duration_ms: int | None
    strip: list[StripItem] = Field(description="the last outcomes, newest first")
    overdue: bool
    incidents: list[OpenIncident]


class SchedulesPage(BaseModel):
    leader: Leader | None
    total: int
    page: int
    pages: int
    per_page: int
    q: str
    status: str | None
    schedules: list[ScheduleRow]


class Attempt(BaseModel):
    attempt: int
    status: AttemptStatus
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    instance_id: str
    error: str | None
    result: Any = None


class FireOut(BaseModel):
    id: int
    schedule: str
    scheduled_for: str | None
    kind: Kind
    status: FireStatus
    error: str | None
    created_at: str | None
    enqueued_at: str | None
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    delay_ms: int | None = Field(description="actual start minus scheduled time")
    fired_by: str | None
    rerun_of: int | None
    actor: str | None = Field(description="an ad-hoc run's actor; null for schedule fires")
    idempotency_key: str | None = Field(description="an ad-hoc run's key, if it has one")
    attempts: list[Attempt]


class FirePage(BaseModel):
    fires: list[FireOut]
    next_before: int | None = Field(description="pass as `before` for the next (older) page")


class AuditEntry(BaseModel):
    id: int
    at: str | None
    who: str
    action: AuditAction
    schedule: str
    fire_id: int | None
    reason: str | None
    details: dict[str, Any]


class IncidentOut(BaseModel):
    id: int
    kind: IncidentKind
    schedule: str
    status: str
    fire_id: int | None
    subject: str | None
    opened_at: str | None
    last_seen_at: str | None
    resolved_at: str | None
    count: int
    last_notified_at: str | None
    recovery_notified_at: str | None
    sentry_event_id: str | None
    details: dict[str, Any]


class RecentFire(BaseModel):
    id: int
    scheduled_for: str | None
    status: FireStatus
    duration_ms: int | None
    delay_ms: int | None


class ScheduleDetail(BaseModel):
    name: str
    in_schedules_yaml: bool
    schedule: ScheduleRow | None
    definition: dict[str, Any] | None = Field(description="from schedules.yaml, redacted")
    upcoming: list[str | None]
    recent: list[RecentFire] = Field(description="for the charts, oldest first")
    audit: list[AuditEntry]
    incidents: list[IncidentOut]


class Message(BaseModel):
    actor: str | None
    queue: str | None
    args: list[Any]
    kwargs: dict[str, Any]


class FireDetail(BaseModel):
    fire: FireOut
    in_schedules_yaml: bool
    message: Message
    reruns: list[int]
    audit: list[AuditEntry]


class PauseIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="required: why")
    until: str | None = Field(
        default=None, description="ISO 8601 time (naive = the schedule's zone) or 30m, 2h, 1d"
    )


class ReasonIn(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class ManualFireOut(BaseModel):
    fire_id: int
    schedule: str
    scheduled_for: str | None
    enqueued: bool = Field(description="false: left pending; the leader sends it shortly")


class Done(BaseModel):
    schedule: str
    paused: bool
    until: str | None = None


class Problem(BaseModel):
    detail: str
