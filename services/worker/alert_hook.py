"""The worker side of alerts: told by tracking how each attempt ended, it tells Sentry and
the alerter. It reads the outcome tracking decided (services/worker/outcomes.py) and
never decides one of its own.

It never blocks the job: Sentry calls only queue to the SDK's own transport thread, and
the Slack/incident work goes to the Alerter's bounded queue (services/watch/alerter.py).

Per attempt: attempt 0 starting → Crons ``in_progress``; success → ``ok``; an exception
that will be retried → marked so Sentry drops it, nothing else; a final failure (retries
exhausted, a ``throws`` exception, a time limit with no retries left) → Sentry event,
Crons ``error``, one alert (folded per schedule).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from services.redact import redact
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.attempts import Outcome
from services.vocabulary import AttemptStatus, FireStatus
from services.watch import sentry as cw_sentry
from services.watch.alerter import Alerter, FailureInfo
from services.worker.tracking import Run, Tracking

logger = logging.getLogger(__name__)

#: How long a stopping worker waits for queued alerts to be delivered.
SHUTDOWN_DRAIN_SECONDS = 10.0


class AlertHook(Middleware):
    """An attempt listener of Tracking; a middleware only to drain alerts at shutdown."""

    def __init__(self, alerter: Alerter, specs: dict[str, ScheduleSpec], instance_id: str) -> None:
        self.alerter = alerter
        self.specs = specs
        self.instance_id = instance_id

    def attempt_started(self, run: Run) -> None:
        if run.attempt == 0:
            cw_sentry.checkin(self.specs.get(run.fire.schedule), run.message_id, "in_progress")

    def attempt_finished(self, run: Run, outcome: Outcome, exception: BaseException | None) -> None:
        spec = self.specs.get(run.fire.schedule)
        if outcome.status == AttemptStatus.SUCCEEDED:
            cw_sentry.checkin(spec, run.message_id, "ok")
            return
        if exception is None:
            return  # skipped on purpose: neither a success nor an error
        if not outcome.final:
            # Retried: not an error for Sentry (see services/watch/sentry.py).
            with contextlib.suppress(Exception):
                setattr(exception, cw_sentry.WILL_RETRY_ATTR, True)
            return
        event_id = cw_sentry.capture_failure(exception)
        cw_sentry.checkin(spec, run.message_id, "error")
        self.alerter.final_failure(
            FailureInfo(
                schedule=run.fire.schedule,
                fire_id=outcome.fire_id,
                message_id=run.message_id,
                actor=run.actor,
                scheduled_for=run.fire.scheduled_for.isoformat(),
                attempt=run.attempt + 1,
                max_attempts=run.max_retries + 1 if isinstance(run.max_retries, int) else None,
                error_type=outcome.error_type or type(exception).__name__,
                error=redact(outcome.error_message or ""),
                duration_ms=outcome.duration_ms,
                instance_id=self.instance_id,
                status=FireStatus(outcome.fire_status),
                sentry_event_id=event_id,
                key=run.fire.key,
            )
        )

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # The sender thread is a daemon: give queued alerts a bounded moment to go out.
        if not self.alerter.join(SHUTDOWN_DRAIN_SECONDS):
            logger.warning("alerts still queued at shutdown; the watchdog's backstop has them")
        cw_sentry.flush(2.0)


def install(
    broker: dramatiq.Broker,
    settings: Settings,
    specs: dict[str, ScheduleSpec],
    engine_factory: Callable[[], Engine],
    instance_id: str | None = None,
) -> AlertHook:
    """Attach the hook to the worker broker's Tracking (and, for shutdown, to the broker)."""
    alerter = Alerter.from_settings(settings, specs, engine_factory)
    hook = AlertHook(alerter, specs, instance_id or settings.instance_id)
    tracking = next(m for m in broker.middleware if isinstance(m, Tracking))
    tracking.add_listener(hook)
    broker.add_middleware(hook)
    return hook
