"""Every APScheduler internal cronwork touches, in one place: its jobs table and job state.

APScheduler 3's ``SQLAlchemyJobStore`` pickles each ``Job``. The pickle names the module of
the job's function and of its trigger class, and the stock store *deletes* every row it
cannot unpickle: a release that moved one of those modules would silently drop every
stored next run time, and with it every overdue fire (docs/design.md, catch-up).

``ScheduleJobStore`` keeps APScheduler's table (``id``, ``next_run_time``, ``job_state``)
but stores a JSON document that names no Python module::

    {"format": 1, "fingerprint": "<the schedule's trigger fingerprint>"}

A job's trigger is rebuilt from its schedule in schedules.yaml; the fingerprint tells
whether the stored next run time still belongs to that trigger. The scheduler reads due
jobs as plain ``(name, next run time)`` pairs (``due``) and moves them in one statement
per tick (``advance``); nothing is unpickled on the hot path. A row this store cannot
read is skipped with a warning, never deleted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime
from sqlalchemy import Engine, and_, bindparam, select, text
from sqlalchemy.exc import IntegrityError

from services.store.tables import apscheduler_jobs

logger = logging.getLogger(__name__)

#: The ``format`` of the JSON job state this module writes.
STATE_FORMAT = 1
#: Rows per DELETE ... IN (...) statement.
_CHUNK = 1000


@dataclass(frozen=True)
class StoredJob:
    """One row of the jobs table, as cronwork reads and writes it."""

    name: str
    #: None: the job is paused in APScheduler's sense (cronwork never writes that).
    next_run_time: datetime | None
    fingerprint: str


def encode_state(fingerprint: str) -> bytes:
    return json.dumps({"format": STATE_FORMAT, "fingerprint": fingerprint}).encode()


def decode_state(raw: bytes) -> str | None:
    """The fingerprint in a stored state, or None when it is not cronwork's JSON form."""
    try:
        data = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        return None
    fingerprint = data.get("fingerprint")
    return fingerprint if isinstance(fingerprint, str) else None


def job_placeholder(**_: object) -> None:
    """The callable on each APScheduler ``Job`` object; never called, never stored."""


class ScheduleJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy jobstore with a stored form that names no module.

    ``triggers`` maps a schedule name to its trigger, for the ``Job`` objects that
    APScheduler's own API (``get_jobs``) hands out; cronwork's scheduler does not need them.
    """

    def __init__(self, engine: Engine, triggers: Mapping[str, BaseTrigger]) -> None:
        super().__init__(engine=engine, tablename=apscheduler_jobs.name)
        # The migration-owned table (services/store/tables.py), not the copy the base
        # class declared on a MetaData of its own.
        self.jobs_t = apscheduler_jobs
        self.triggers = triggers

    def start(self, scheduler: Any, alias: str) -> None:
        # The base class would CREATE TABLE IF NOT EXISTS; migrations own the schema.
        self._scheduler = scheduler
        self._alias = alias
        self._logger = logging.getLogger(f"apscheduler.jobstores.{alias}")

    # -- what cronwork uses ----------------------------------------------------------

    def due(self, now: datetime) -> list[tuple[str, datetime]]:
        """``(name, next run time)`` of every job due at ``now``, oldest first."""
        t = self.jobs_t
        stmt = (
            select(t.c.id, t.c.next_run_time)
            .where(t.c.next_run_time <= datetime_to_utc_timestamp(now))
            .order_by(t.c.next_run_time)
        )
        with self.engine.connect() as conn:
            return [(r.id, utc_timestamp_to_datetime(r.next_run_time)) for r in conn.execute(stmt)]

    def stored(self) -> dict[str, StoredJob]:
        """Every readable row, by name (sync compares them with schedules.yaml)."""
        t = self.jobs_t
        out: dict[str, StoredJob] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(select(t.c.id, t.c.next_run_time, t.c.job_state)):
                fingerprint = decode_state(r.job_state)
                if fingerprint is None:
                    logger.warning(
                        "stored job %s is not in cronwork's format; it is rescheduled from now",
                        r.id,
                    )
                    continue
                out[r.id] = StoredJob(r.id, utc_timestamp_to_datetime(r.next_run_time), fingerprint)
        return out

    def advance(self, moves: Sequence[tuple[str, datetime | None]]) -> None:
        """Move each job to its next run time, or remove it (None), in one transaction.

        Only ``next_run_time`` changes: the state (the fingerprint) stays as written.
        """
        t = self.jobs_t
        updates = [
            {"job_id": name, "next": datetime_to_utc_timestamp(when)}
            for name, when in moves
            if when is not None
        ]
        removals = [name for name, when in moves if when is None]
        with self.engine.begin() as conn:
            if updates and conn.dialect.name == "postgresql":
                # One statement for any number of jobs: executemany sent 10,000 UPDATEs
                # for a burst of 10,000, as long again as fencing them (py-spy).
                conn.execute(
                    text(
                        f"UPDATE {t.name} AS j SET next_run_time = v.next"
                        " FROM unnest(CAST(:ids AS varchar[]), CAST(:nexts AS float8[]))"
                        " AS v(id, next) WHERE j.id = v.id"
                    ),
                    {"ids": [u["job_id"] for u in updates], "nexts": [u["next"] for u in updates]},
                )
            elif updates:
                conn.execute(
                    t.update()
                    .where(t.c.id == bindparam("job_id"))
                    .values(next_run_time=bindparam("next")),
                    updates,
                )
            for start in range(0, len(removals), _CHUNK):
                conn.execute(t.delete().where(t.c.id.in_(removals[start : start + _CHUNK])))

    def replace(self, jobs: Sequence[StoredJob], removed: Sequence[str]) -> None:
        """Write ``jobs`` (new or changed) and delete ``removed`` in one transaction."""
        t = self.jobs_t
        rows = [
            {
                "id": job.name,
                "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                "job_state": encode_state(job.fingerprint),
            }
            for job in jobs
        ]
        gone = [*removed, *(r["id"] for r in rows)]
        with self.engine.begin() as conn:
            for start in range(0, len(gone), _CHUNK):
                conn.execute(t.delete().where(t.c.id.in_(gone[start : start + _CHUNK])))
            if rows:
                conn.execute(t.insert(), rows)

    # -- APScheduler's jobstore API, on the same stored form ---------------------------

    def lookup_job(self, job_id: str) -> Job | None:
        jobs = self._get_jobs(self.jobs_t.c.id == job_id)
        return jobs[0] if jobs else None

    def add_job(self, job: Job) -> None:
        row = self._row(job)
        with self.engine.begin() as conn:
            try:
                conn.execute(self.jobs_t.insert().values(**row))
            except IntegrityError:
                raise ConflictingIdError(job.id) from None

    def update_job(self, job: Job) -> None:
        row = self._row(job)
        del row["id"]
        with self.engine.begin() as conn:
            result = conn.execute(
                self.jobs_t.update().values(**row).where(self.jobs_t.c.id == job.id)
            )
            if result.rowcount == 0:
                raise JobLookupError(job.id)

    def _row(self, job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": encode_state(str(job.kwargs.get("fingerprint", ""))),
        }

    def _get_jobs(self, *conditions: Any) -> list[Job]:
        t = self.jobs_t
        stmt = select(t.c.id, t.c.next_run_time, t.c.job_state).order_by(t.c.next_run_time)
        if conditions:
            stmt = stmt.where(and_(*conditions))
        jobs: list[Job] = []
        with self.engine.connect() as conn:
            for r in conn.execute(stmt):
                fingerprint = decode_state(r.job_state)
                trigger = self.triggers.get(r.id)
                if fingerprint is None or trigger is None:
                    continue  # not ours to interpret, and never deleted here
                jobs.append(
                    self.make_job(
                        r.id, trigger, utc_timestamp_to_datetime(r.next_run_time), fingerprint
                    )
                )
        return jobs

    def make_job(
        self, name: str, trigger: BaseTrigger, next_run_time: datetime | None, fingerprint: str
    ) -> Job:
        job = Job(
            self._scheduler,
            id=name,
            name=name,
            func=job_placeholder,
            trigger=trigger,
            executor="default",
            args=(),
            kwargs={"fingerprint": fingerprint},
            misfire_grace_time=None,
            coalesce=False,
            max_instances=1,
            next_run_time=next_run_time,
        )
        job._jobstore_alias = self._alias
        return job
