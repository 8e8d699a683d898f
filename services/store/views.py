"""Read models behind ``cronwork status``/``history`` and the dashboard's JSON API.

One builder per shape (a schedule row, a fire with its attempts), used by the CLI's
``--json`` and by the API alike, so both print the same thing. Everything read from the
database passes through the secret redaction on its way out. Times are ISO 8601 in UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select, tuple_

from services.redact import redact
from services.schedules.describe import describe_cron, describe_trigger
from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.store.schedule_rows import in_force
from services.store.strips import Strip, recent_fires
from services.store.tables import apscheduler_jobs, attempts, fires, incidents, instances, schedules
from services.timeutil import as_utc, iso, utcnow
from services.vocabulary import FireKind, FireStatus, IncidentKind

#: Outcomes in a schedule row's strip (newest first).
STRIP_LENGTH = 20
#: Above this many names, read whole small tables instead of a long IN list: a page of
#: the dashboard asks for 50 names, ``status`` for every configured one, and rendering a
#: thousand bind parameters cost more (4 ms) than the rows of schedules not asked for.
IN_LIST_LIMIT = 100
#: Connections a long report reads its strips on at once.
STRIP_READERS = 2


def leader(engine: Engine, lease_ttl: float) -> dict[str, Any] | None:
    """The scheduler that holds the lease, by its own recent heartbeat."""
    fresh = utcnow() - timedelta(seconds=max(lease_ttl, 1.0) * 1.5)
    stmt = (
        select(instances.c.instance_id, instances.c.leader_since)
        .where(
            and_(
                instances.c.role == "scheduler",
                instances.c.leader_since.is_not(None),
                instances.c.stopped_at.is_(None),
                instances.c.heartbeat_at > fresh,
            )
        )
        .order_by(instances.c.leader_since.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return {"instance_id": row.instance_id, "since": iso(row.leader_since)}


def status(
    engine: Engine,
    specs: dict[str, ScheduleSpec],
    lease_ttl: float,
    strip_length: int = STRIP_LENGTH,
) -> dict[str, Any]:
    """``cronwork status --json``: the leader and every schedule's row (``strip_length``:
    how many recent fires each row holds)."""
    return {
        "leader": leader(engine, lease_ttl),
        "schedules": schedule_rows(engine, list(specs.values()), strip_length=strip_length),
    }


def schedule_rows(
    engine: Engine,
    specs: Sequence[ScheduleSpec],
    now: datetime | None = None,
    strip_length: int = STRIP_LENGTH,
) -> list[dict[str, Any]]:
    """One row per schedule, in the order given: what the status table and the dashboard's
    schedules page show. Four queries however many schedules. With a ``strip_length``
    shorter than the page's, ``last_duration_ms`` only looks that far back."""
    now = now or datetime.now(UTC)
    names = [s.name for s in specs]
    if engine.dialect.name != "postgresql" or len(names) <= IN_LIST_LIMIT:
        return _rows(engine, specs, names, now, strip_length)
    # A long report's strips are most of its time, and most of that is Postgres's: read
    # them in halves on two more connections (two of Postgres's cores) while this one
    # reads the rest and builds the rows. bench/history.py, 1,000 schedules by 20 fires:
    # 50 ms in turn, 35 ms so.
    with ThreadPoolExecutor(STRIP_READERS, "cronwork-strips") as pool:
        parts = [
            pool.submit(_read_strips, engine, names[i::STRIP_READERS], strip_length)
            for i in range(STRIP_READERS)
        ]
        out = _rows(engine, specs, names, now, None)
        strips: dict[str, Strip] = {}
        for part in parts:
            strips.update(part.result())
    for row in out:
        row.update(_strip_fields(strips.get(row["name"])))
    return out


def _strip_fields(strip: Strip | None) -> dict[str, Any]:
    """A row's fields read from its strip (none: no fire yet)."""
    return {
        "last_fire": None if strip is None else strip.newest,
        "last_duration_ms": None if strip is None else strip.last_duration_ms,
        "strip": [] if strip is None else strip.fires,
    }


def _read_strips(engine: Engine, names: list[str], per: int) -> dict[str, Strip]:
    with engine.connect() as conn:
        return recent_fires(conn, names, per)


def _rows(
    engine: Engine,
    specs: Sequence[ScheduleSpec],
    names: list[str],
    now: datetime,
    strip_length: int | None,
) -> list[dict[str, Any]]:
    """The rows, with their strips when ``strip_length`` is given (else empty ones)."""
    with engine.connect() as conn:
        jobs = select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time)
        pauses = select(schedules).where(in_force(now))
        opened = select(incidents.c.id, incidents.c.kind, incidents.c.schedule).where(
            incidents.c.resolved_at.is_(None)
        )
        if len(names) <= IN_LIST_LIMIT:
            jobs = jobs.where(apscheduler_jobs.c.id.in_(names))
            pauses = pauses.where(schedules.c.name.in_(names))
            opened = opened.where(incidents.c.schedule.in_(names))
        next_runs = {r.id: r.next_run_time for r in conn.execute(jobs)}
        paused = {r.name: r for r in conn.execute(pauses)}
        open_incidents: dict[str, list[dict[str, Any]]] = {}
        for r in conn.execute(opened.order_by(incidents.c.id)):
            open_incidents.setdefault(r.schedule, []).append({"id": r.id, "kind": r.kind})
        strips = {} if strip_length is None else recent_fires(conn, names, strip_length)
    out = []
    for spec in specs:
        pause = paused.get(spec.name)
        broken: str | None = None
        next_run: datetime | None = None
        if spec.name in next_runs:
            ts = next_runs[spec.name]
            next_run = None if ts is None else datetime.fromtimestamp(ts, UTC)
        elif spec.enabled:
            try:
                first = build_trigger(spec).get_next_fire_time(None, now)
                next_run = first and first.astimezone(UTC)  # year 1 at +05:00 is not in UTC
            except Exception as exc:  # one schedule's trigger must not fail the whole report
                broken = f"{type(exc).__name__}: {exc}"
        found = open_incidents.get(spec.name, [])
        # Overdue: the watchdog says so, or the stored next run is older than the grace,
        # which means no scheduler is advancing it (nobody leads).
        stale = next_run is not None and next_run < now - spec.overdue_grace()
        out.append(
            {
                "name": spec.name,
                "actor": spec.actor,
                "trigger": spec.describe_trigger(),
                "trigger_text": _words(spec),
                "timezone": spec.timezone,
                "enabled": spec.enabled,
                "paused": pause is not None,
                "pause": None if pause is None else pause_json(pause),
                "next_run": iso(next_run) if spec.enabled and pause is None else None,
                # Why its fire times cannot be computed (services/scheduler/broken.py).
                "broken": broken,
                **_strip_fields(strips.get(spec.name)),
                "overdue": spec.enabled
                and pause is None
                and (stale or any(i["kind"] == IncidentKind.OVERDUE for i in found)),
                "incidents": found,
            }
        )
    return out


def pause_json(row: Any) -> dict[str, Any]:
    return {
        "at": iso(row.paused_at),
        "by": None if row.paused_by is None else redact(row.paused_by),
        "reason": None if row.paused_reason is None else redact(row.paused_reason),
        "until": iso(row.paused_until),
    }


@lru_cache(maxsize=4096)
def _cron_words(expr: str) -> str:
    return describe_cron(expr)


def _words(spec: ScheduleSpec) -> str:
    return (
        _cron_words(spec.cron) if spec.trigger == "cron" and spec.cron else describe_trigger(spec)
    )


def history(
    engine: Engine,
    schedule: str | None = None,
    limit: int = 20,
    before: int | None = None,
    *,
    actor: str | None = None,
    actor_schedules: Sequence[str] = (),
    status: FireStatus | None = None,
    kind: FireKind | None = None,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """Newest fires first, each with its attempts. ``before`` (a fire id) pages back: the
    fires older than that one, by (scheduled_for, id), through the indexes on both.

    Filters, all optional and combined: ``actor`` matches the ad-hoc runs of that actor
    (``fires.actor``) and the fires of ``actor_schedules``, the schedules that run it
    (schedules.yaml knows them: see :func:`schedules_of`); ``status``, ``kind``; ``since``:
    scheduled at or after it."""
    stmt = select(fires).order_by(fires.c.scheduled_for.desc(), fires.c.id.desc()).limit(limit)
    if schedule is not None:
        stmt = stmt.where(fires.c.schedule == schedule)
    if actor is not None:
        mine = fires.c.actor == actor
        stmt = stmt.where(
            or_(mine, fires.c.schedule.in_(actor_schedules)) if actor_schedules else mine
        )
    if status is not None:
        stmt = stmt.where(fires.c.status == status)
    if kind is not None:
        stmt = stmt.where(fires.c.kind == kind)
    if since is not None:
        stmt = stmt.where(fires.c.scheduled_for >= utc_bound(since))
    with engine.connect() as conn:
        if before is not None:
            cursor = conn.execute(
                select(fires.c.scheduled_for, fires.c.id).where(fires.c.id == before)
            ).first()
            if cursor is None:
                return []
            stmt = stmt.where(
                tuple_(fires.c.scheduled_for, fires.c.id) < tuple_(cursor.scheduled_for, before)
            )
        rows = conn.execute(stmt).all()
        by_fire = fire_attempts(conn, [r.id for r in rows])
    return [fire_json(r, by_fire[r.id]) for r in rows]


def schedules_of(specs: Iterable[ScheduleSpec], actor: str) -> list[str]:
    """The names of the schedules that run ``actor``."""
    return [s.name for s in specs if s.actor == actor]


def utc_bound(at: datetime) -> datetime:
    """``at`` in UTC (naive: taken as UTC), clamped to the range Python can hold: a bound
    such as 0001-01-01T00:00-05:00 has no UTC form, and means "from the beginning"."""
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:
        return (
            datetime.min.replace(tzinfo=UTC) if at.year == 1 else datetime.max.replace(tzinfo=UTC)
        )


def fire_attempts(conn: Connection, ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Each fire's attempts, read by ``fire_id`` in attempt order (then start time)."""
    by_fire: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not by_fire:
        return by_fire
    query = (
        select(attempts)
        .where(attempts.c.fire_id.in_(list(by_fire)))
        .order_by(attempts.c.fire_id, attempts.c.attempt, attempts.c.started_at)
    )
    for a in conn.execute(query):
        by_fire[a.fire_id].append(
            {
                "attempt": a.attempt,
                "status": a.status,
                "started_at": iso(a.started_at),
                "finished_at": iso(a.finished_at),
                "duration_ms": a.duration_ms,
                "instance_id": a.instance_id,
                "error": _error(a.error_type, a.error_message),
                "result": redact_json(a.result),
            }
        )
    return by_fire


def fire_json(r: Any, attempt_list: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": r.id,
        "schedule": r.schedule,
        "scheduled_for": iso(r.scheduled_for),
        "kind": r.kind,
        "status": r.status,
        "error": _error(r.error_type, r.error),
        "created_at": iso(r.created_at),
        "enqueued_at": iso(r.enqueued_at),
        "started_at": iso(r.started_at),
        "finished_at": iso(r.finished_at),
        "duration_ms": duration_ms(r.started_at, r.finished_at),
        # Actual start minus scheduled time: how late the work began.
        "delay_ms": duration_ms(r.scheduled_for, r.started_at),
        "fired_by": None if r.fired_by is None else redact(r.fired_by),
        "rerun_of": r.rerun_of,
        # Ad-hoc runs (services/adhoc.py): the actor sent and the caller's key.
        "actor": r.actor,
        "idempotency_key": None if r.idempotency_key is None else redact(r.idempotency_key),
        "attempts": attempt_list,
    }


def _error(error_type: str | None, message: str | None) -> str | None:
    text_ = f"{error_type}: {message}" if error_type else message
    return None if text_ is None else redact(text_)


def redact_json(value: Any) -> Any:
    """``value`` with every string in it passed through the redaction."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): redact_json(v) for k, v in value.items()}
    return value


def duration_ms(start: datetime | None, end: datetime | None) -> int | None:
    start, end = as_utc(start), as_utc(end)
    if start is None or end is None:
        return None
    return int((end - start).total_seconds() * 1000)
