"""Tracking: every attempt of every fire is a row, written before its body runs.

A Dramatiq middleware, first in the worker's list (services/worker/broker.py):

- ``before_process_message`` claims the attempt (services/store/attempts.py). A claim
  refused (the fire already has its outcome, a duplicate delivery, ``overlap: skip``) is
  recorded and the message skipped. A claim that cannot be recorded (the database is
  away) is not run either: the message goes back to the broker after a short delay,
  without using up a retry.
- ``after_process_message`` runs after ``Retries`` (Dramatiq calls after-hooks in reverse
  order), so ``message.failed`` already says whether this was the last attempt. It
  decides the outcome once (services/worker/outcomes.py), tells its listeners (the alert
  hook) what it decided, and queues the write; the message is acknowledged once the
  write is committed (services/worker/acks.py), written again until it lands.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage
from sqlalchemy import Engine

from services import metrics
from services.constants import FIRE_OPTION
from services.context import FireInfo, _set_current, take_skip_reason
from services.fire_message import FireOptions, attempt_number, with_resends
from services.liveness import Liveness
from services.locks import Lock
from services.outages import DATABASE, dependency_of
from services.redact import redact
from services.store.attempts import AttemptStore, Claim, Claimed, Outcome
from services.timeutil import iso, utcnow
from services.vocabulary import AttemptStatus
from services.worker.acks import HeldAcks
from services.worker.job_locks import JobLocks
from services.worker.outcomes import OutcomeWriter, decide

logger = logging.getLogger(__name__)

#: Delay before a message whose claim could not be recorded comes back, doubling on each
#: try up to the maximum (the message option ``requeues`` counts them).
REQUEUE_FIRST_MS = 500
REQUEUE_MAX_MS = 30_000


@dataclass
class Run:
    """An attempt this worker thread claimed and is running."""

    fire: FireOptions
    message_id: str
    actor: str
    claimed: Claimed
    started_at: datetime
    started_mono: float
    max_retries: int | None
    #: The lock the job runs under (services/worker/job_locks.py), once taken.
    lock: Lock | None = None

    @property
    def attempt(self) -> int:
        return self.claimed.attempt


class AttemptListener(Protocol):
    """Told about every attempt tracking runs (the alert hook is one)."""

    def attempt_started(self, run: Run) -> None: ...

    def attempt_finished(
        self, run: Run, outcome: Outcome, exception: BaseException | None
    ) -> None: ...


class Tracking(Middleware):
    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        instance_id: str,
        liveness_factory: Callable[[], Liveness | None] = lambda: None,
        acks: HeldAcks | None = None,
    ) -> None:
        self._engine_factory = engine_factory
        #: Where outcomes' acknowledgements wait for their commit (services/worker/acks.py);
        #: None: each worker thread waits for its own outcome's commit.
        self.acks = acks
        self._liveness_factory = liveness_factory
        self._store: AttemptStore | None = None
        self._writer: OutcomeWriter | None = None
        self._lock = threading.Lock()
        self.instance_id = instance_id
        self.listeners: list[AttemptListener] = []
        self.locks = JobLocks()
        self._local = threading.local()

    @property
    def store(self) -> AttemptStore:
        # Built lazily in the worker process that uses it, never inherited across a fork.
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = AttemptStore(self._engine_factory(), self._liveness_factory())
        return self._store

    @property
    def writer(self) -> OutcomeWriter:
        if self._writer is None:
            store = self.store  # outside the lock: building the store takes it too
            with self._lock:
                if self._writer is None:
                    self._writer = OutcomeWriter(store.finish)
        return self._writer

    def add_listener(self, listener: AttemptListener) -> None:
        self.listeners.append(listener)

    # -- before ------------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._local.run = None
        _set_current(None)
        fire = FireOptions.from_options(message.options)
        if fire is None:
            return  # not a cronwork fire: the actor runs untracked, as in plain Dramatiq
        claim = Claim(
            message_id=message.message_id,
            attempt=attempt_number(message.options, fire),
            schedule=fire.schedule,
            overlap=fire.overlap,
            instance_id=self.instance_id,
            started_at=utcnow(),
            earlier_claim=_earlier_claim(message.options),
        )
        try:
            claimed = self._claim(claim)
            DATABASE.ok()
        except Exception as exc:
            self._put_back(broker, message, claim, exc)
            raise SkipMessage("its start could not be recorded") from None
        if claimed.skip_reason is not None:
            logger.info(
                "%s %s attempt %d skipped: %s",
                fire.schedule,
                iso(fire.scheduled_for),
                claimed.attempt,
                claimed.skip_reason,
                extra={"action": "attempt_skipped", "schedule": fire.schedule},
            )
            metrics.record_attempt(fire.schedule, AttemptStatus.SKIPPED, None)
            raise SkipMessage(claimed.skip_reason)
        if claimed.attempt != claim.attempt:
            # A takeover runs as a re-send: later retries of it must count from here.
            resends = fire.resends + claimed.attempt - claim.attempt
            message.options.update(with_resends(message.options, resends))
        run = Run(
            fire=fire,
            message_id=message.message_id,
            actor=message.actor_name,
            claimed=claimed,
            started_at=claim.started_at,
            started_mono=time.monotonic(),
            max_retries=message.options.get("max_retries"),
        )
        self._local.run = run
        _set_current(
            FireInfo(
                schedule=fire.schedule,
                scheduled_for=fire.scheduled_for,
                kind=fire.kind,
                fire_id=claimed.fire_id,
                message_id=message.message_id,
                attempt=claimed.attempt,
            )
        )
        for listener in self.listeners:
            _tell(listener.attempt_started, run)
        lock = self.locks.lock_for(broker, message)
        if lock is not None:
            # A busy lock under `raise` or `wait` raises LockBusy here: the attempt fails
            # like any error and Retries tries again later.
            if not lock.acquire():
                raise SkipMessage("its lock is busy")  # after_skip_message records why
            run.lock = lock

    def _claim(self, claim: Claim) -> Claimed:
        try:
            return self.store.claim(claim)
        except Exception as exc:
            if dependency_of(exc) is None:
                raise
        # A connection broken by a restarted Postgres fails once: try again at once, on a
        # new one. Had the first claim committed with its reply lost, this one adopts it.
        return self.store.claim(
            dataclasses.replace(claim, earlier_claim=(claim.instance_id, claim.started_at))
        )

    def _put_back(
        self, broker: dramatiq.Broker, message: Any, claim: Claim, exc: Exception
    ) -> None:
        """Send the message again after a short delay: not run, no retry used up."""
        dependency = dependency_of(exc) or DATABASE
        dependency.failed("record the start of an attempt", exc)
        option = dict(message.options[FIRE_OPTION])
        requeues = int(option.get("requeues", 0))
        option["requeues"] = requeues + 1
        option["claim"] = [claim.instance_id, claim.started_at.isoformat()]
        delay = min(REQUEUE_FIRST_MS * 2**requeues, REQUEUE_MAX_MS)
        try:
            broker.enqueue(
                message.copy(options={**message.options, FIRE_OPTION: option}), delay=delay
            )
        except Exception as send_exc:
            # Not acknowledged either way: the broker still holds the message (Dramatiq
            # gives it to a worker again), or lost it with Redis (the leader re-sends it).
            logger.warning(
                "could not put %s back in the queue: %s",
                message.message_id,
                redact(str(send_exc)),
            )

    def before_worker_thread_shutdown(self, broker: dramatiq.Broker, thread: Any) -> None:
        # Each worker thread leaves once every acknowledgement handed over is sent, so a
        # stopping worker is done when Dramatiq has joined its threads, as it was when
        # each thread waited for its own (the heartbeat then marks the worker stopped).
        if self.acks is not None:
            self.acks.flush()

    # -- after -------------------------------------------------------------------

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._end(result, exception, failed_for_good=bool(message.failed), skipped=None)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # A claimed attempt was skipped: its lock was busy, or another middleware said so.
        self._end(None, None, failed_for_good=False, skipped="skipped by another middleware")

    def _end(
        self,
        result: Any,
        exception: BaseException | None,
        *,
        failed_for_good: bool,
        skipped: str | None,
    ) -> None:
        """Decide and record the outcome of this thread's claimed attempt, if it has one.

        ``skipped``: the reason recorded when the attempt was skipped and nothing said why.
        """
        run: Run | None = getattr(self._local, "run", None)
        self._local.run = None
        skip_reason = take_skip_reason() or skipped
        _set_current(None)
        if run is None or run.claimed.attempt_id is None:
            return
        outcome = decide(
            message_id=run.message_id,
            attempt_id=run.claimed.attempt_id,
            fire_id=run.claimed.fire_id,
            attempt=run.attempt,
            finished_at=utcnow(),
            duration_ms=int((time.monotonic() - run.started_mono) * 1000),
            result=result,
            exception=exception,
            failed_for_good=failed_for_good,
            skip_reason=skip_reason,
        )
        self._finish(run, outcome, exception)

    def _finish(self, run: Run, outcome: Outcome, exception: BaseException | None) -> None:
        if run.lock is not None:
            run.lock.release()
        # Counted and told before the write: the attempt happened even if recording it is
        # late, and an alert never waits on a database outage.
        metrics.record_attempt(run.fire.schedule, outcome.status, outcome.duration_ms / 1000)
        for listener in self.listeners:
            _tell(listener.attempt_finished, run, outcome, exception)
        self._record(run, outcome)
        if logger.isEnabledFor(logging.INFO):
            due = iso(run.fire.scheduled_for)
            logger.info(
                "%s %s attempt %d %s in %.3fs%s",
                run.fire.schedule,
                due,
                run.attempt,
                outcome.status.value,
                outcome.duration_ms / 1000,
                f": {outcome.error_type}: {outcome.error_message}" if outcome.error_type else "",
                extra={
                    "action": "attempt_finished",
                    "schedule": run.fire.schedule,
                    "scheduled_for": due,
                    "attempt": run.attempt,
                    "status": outcome.status.value,
                    "duration_ms": outcome.duration_ms,
                },
            )

    def _record(self, run: Run, outcome: Outcome) -> None:
        """Queue the outcome and hold the message's acknowledgement until it is committed;
        or write it here and now: without held acks, and under ``overlap: skip``, whose
        next fire's claim reads the schedule's fires outside the batch and would find
        this one still running."""
        if self.acks is not None and run.fire.overlap != "skip":
            try:
                pending = self.store.finish_later(outcome)
            except Exception:  # the writer thread could not start: write it here
                logger.warning("could not queue an outcome; writing it now", exc_info=True)
                pending = None
            if pending is not None:
                self.acks.hold(run.message_id, pending, outcome, self.writer)
                return
        self.writer.record(outcome)


def _earlier_claim(options: dict[str, Any]) -> tuple[str, datetime] | None:
    raw = (options.get(FIRE_OPTION) or {}).get("claim")
    if not (isinstance(raw, list) and len(raw) == 2):
        return None
    try:
        return str(raw[0]), datetime.fromisoformat(str(raw[1]))
    except ValueError:
        return None


def _tell(hook: Callable[..., None], *args: Any) -> None:
    """A listener's failure never touches the job."""
    try:
        hook(*args)
    except Exception:
        logger.exception("attempt listener %r failed", hook)
