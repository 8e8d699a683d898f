"""Sentry: error capture and Crons check-ins.

- ``init_sentry`` runs once per process when ``CRONWORK_SENTRY_DSN`` is set: with
  ``DramatiqIntegration`` in workers, *before* the broker is created (it patches
  ``Broker.__init__`` to add its middleware), plain in the scheduler.
- Errors: the integration's middleware captures an actor's exception after every
  attempt. An attempt that will be retried is not an error anyone should act on, so
  the worker's hook (services/alerts/hook.py) marks its exception and
  ``_before_send`` drops it. The final failure is captured by the hook itself (to get
  the event id for Slack); the integration's second capture of the same exception
  object is dropped by the SDK's Dedupe integration. Dramatiq's own "Failed to process
  message" log line is not turned into an event (``ignore_logger``), or every retried
  attempt would be one.
- Crons: one monitor per schedule (slug = ``monitor_slug(name)``), its
  ``monitor_config`` sent with every check-in (Sentry upserts the monitor). The
  check-in id is derived from the fire's message id, so every attempt of a fire (in
  any worker process) speaks about the same check-in: ``in_progress`` when attempt 0
  starts, ``ok`` on success, ``error`` only at the final outcome.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from datetime import timedelta
from typing import Any

from services.schedules.spec import ScheduleSpec
from services.settings import Settings

logger = logging.getLogger(__name__)

#: Set on an exception whose attempt will be retried: not reported to Sentry.
WILL_RETRY_ATTR = "_cronwork_will_retry"
_SLUG_BAD = re.compile(r"[^a-z0-9_-]+")


def init_sentry(settings: Settings, *, dramatiq: bool) -> bool:
    """Initialise the SDK when a DSN is set; True if it was."""
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import ignore_logger

    integrations: list[Any] = []
    if dramatiq:
        from sentry_sdk.integrations.dramatiq import DramatiqIntegration

        integrations.append(DramatiqIntegration())
    ignore_logger("dramatiq.worker.WorkerThread")
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment,
        release=settings.sentry_release,
        integrations=integrations,
        before_send=_before_send,
    )
    return True


def _before_send(event: Any, hint: dict[str, Any]) -> Any:
    exc_info = hint.get("exc_info") if hint else None
    if exc_info and getattr(exc_info[1], WILL_RETRY_ATTR, False):
        return None
    return event


def enabled() -> bool:
    # The SDK is imported only where a DSN is set (6 MB resident in each process,
    # bench/scheduler_memory.py); if nothing imported it, nothing initialised it.
    sdk = sys.modules.get("sentry_sdk")
    if sdk is None:
        return False
    client = sdk.get_client()
    return client.is_active() and bool(client.dsn)


def flush(timeout: float) -> None:
    if enabled():
        import sentry_sdk

        sentry_sdk.flush(timeout)


def capture_failure(exception: BaseException) -> str | None:
    """Report a fire's final exception; the Sentry event id, or None."""
    if not enabled():
        return None
    import sentry_sdk

    try:
        return sentry_sdk.capture_exception(exception)
    except Exception:
        logger.warning("sentry capture failed", exc_info=True)
        return None


def monitor_slug(name: str) -> str:
    return _SLUG_BAD.sub("-", name.lower()).strip("-")[:50] or "schedule"


def _minutes(delta: timedelta) -> int:
    return max(1, -(-int(delta.total_seconds()) // 60))  # rounded up, at least 1


def monitor_config(spec: ScheduleSpec) -> dict[str, Any] | None:
    """Sentry's monitor_config for a schedule; None for one-off ``at`` schedules."""
    schedule: dict[str, Any]
    if spec.trigger == "cron" and spec.cron:
        schedule = {"type": "crontab", "value": spec.cron}
    elif spec.trigger == "every" and spec.every is not None:
        seconds = int(spec.every.total_seconds())
        value, unit = _minutes(spec.every), "minute"
        for size, name in ((86400, "day"), (3600, "hour")):
            if seconds >= size and seconds % size == 0:
                value, unit = seconds // size, name
                break
        schedule = {"type": "interval", "value": value, "unit": unit}
    else:
        return None
    config: dict[str, Any] = {
        "schedule": schedule,
        "timezone": spec.timezone,
        "failure_issue_threshold": spec.alerts.failure_threshold,
    }
    if spec.alerts.checkin_margin is not None:
        config["checkin_margin"] = _minutes(spec.alerts.checkin_margin)
    runtime = spec.max_runtime or spec.time_limit
    if runtime is not None:
        config["max_runtime"] = _minutes(runtime)
    return config


def checkin(spec: ScheduleSpec | None, message_id: str, status: str) -> None:
    """Send one check-in for a fire (never raises)."""
    if spec is None or not spec.alerts.sentry or not enabled():
        return
    config = monitor_config(spec)
    if config is None:
        return
    from sentry_sdk.crons import capture_checkin

    try:
        capture_checkin(
            monitor_slug=monitor_slug(spec.name),
            check_in_id=uuid.UUID(message_id).hex,
            status=status,
            monitor_config=config,  # type: ignore[arg-type]
        )
    except Exception:
        logger.warning("sentry check-in failed for %s", spec.name, exc_info=True)
