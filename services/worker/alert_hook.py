"""The worker side of alerts: a Dramatiq middleware that sees each fire's final outcome.

Installed right after ``Tracking`` (``install``), so its before-hook runs only for
messages Tracking did not skip, and its after-hook runs after ``Retries`` decided
(``message.failed``: this attempt was the last). It never blocks the job: Sentry
calls only queue to the SDK's own transport thread, and the Slack/incident work goes
to the Alerter's bounded queue (services/alerts/__init__.py).

Per attempt: attempt 0 starting → Crons ``in_progress``; success → ``ok``;
an exception that will be retried → marked so Sentry drops it, nothing else;
a final failure (retries exhausted, a ``throws`` exception, a time limit with no
retries left) → Sentry event, Crons ``error``, one alert (folded per schedule).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy import Engine

from services.constants import FIRE_OPTION
from services.context import current_fire
from services.redact import redact
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.vocabulary import FireStatus
from services.watch import sentry as cw_sentry
from services.watch.alerter import Alerter, FailureInfo
from services.worker.tracking import Tracking

logger = logging.getLogger(__name__)

#: How long a stopping worker waits for queued alerts to be delivered.
SHUTDOWN_DRAIN_SECONDS = 10.0


@dataclass
class _Run:
    schedule: str
    attempt: int  # 0-based
    started: float


class AlertHook(Middleware):
    def __init__(self, alerter: Alerter, specs: dict[str, ScheduleSpec], instance_id: str) -> None:
        self.alerter = alerter
        self.specs = specs
        self.instance_id = instance_id
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._local.run = None
        opts = message.options.get(FIRE_OPTION)
        if not opts:
            return
        run = _Run(opts["schedule"], int(message.options.get("retries", 0)), time.monotonic())
        self._local.run = run
        if run.attempt == 0:
            cw_sentry.checkin(self.specs.get(run.schedule), message.message_id, "in_progress")

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._local.run = None

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # The sender thread is a daemon: give queued alerts a bounded moment to go out.
        if not self.alerter.join(SHUTDOWN_DRAIN_SECONDS):
            logger.warning("alerts still queued at shutdown; the watchdog's backstop has them")
        cw_sentry.flush(2.0)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        run: _Run | None = getattr(self._local, "run", None)
        self._local.run = None
        if run is None:
            return
        spec = self.specs.get(run.schedule)
        if exception is None:
            cw_sentry.checkin(spec, message.message_id, "ok")
            return
        if not message.failed:
            # Retried: not an error for Sentry (see services/alerts/sentry.py).
            with contextlib.suppress(Exception):
                setattr(exception, cw_sentry.WILL_RETRY_ATTR, True)
            return
        try:
            self._final_failure(broker, message, run, spec, exception)
        except Exception:
            logger.exception("could not raise the alert for %s", run.schedule)

    def _final_failure(
        self,
        broker: dramatiq.Broker,
        message: Any,
        run: _Run,
        spec: ScheduleSpec | None,
        exception: BaseException,
    ) -> None:
        event_id = cw_sentry.capture_failure(exception)
        cw_sentry.checkin(spec, message.message_id, "error")
        max_retries = message.options.get("max_retries")
        opts = message.options.get(FIRE_OPTION) or {}
        fire = current_fire()  # still set: Tracking's after-hook runs after this one
        info = FailureInfo(
            schedule=run.schedule,
            fire_id=fire.fire_id if fire is not None else None,
            message_id=message.message_id,
            actor=message.actor_name,
            scheduled_for=opts.get("scheduled_for"),
            attempt=run.attempt + 1,
            max_attempts=max_retries + 1 if isinstance(max_retries, int) else None,
            error_type=type(exception).__name__,
            error=redact(str(exception) or type(exception).__name__),
            duration_ms=int((time.monotonic() - run.started) * 1000),
            instance_id=self.instance_id,
            status=FireStatus.TIMED_OUT
            if isinstance(exception, TimeLimitExceeded)
            else FireStatus.FAILED,
            sentry_event_id=event_id,
        )
        self.alerter.final_failure(info)


def install(
    broker: dramatiq.Broker,
    settings: Settings,
    specs: dict[str, ScheduleSpec],
    engine_factory: Callable[[], Engine],
    instance_id: str | None = None,
) -> AlertHook:
    """Add the hook to a worker broker, right after Tracking (before Retries)."""
    alerter = Alerter.from_settings(settings, specs, engine_factory)
    hook = AlertHook(alerter, specs, instance_id or settings.instance_id)
    tracking = next((m for m in broker.middleware if isinstance(m, Tracking)), None)
    if tracking is not None:
        broker.add_middleware(hook, after=type(tracking))
    else:
        broker.add_middleware(hook)
    return hook
