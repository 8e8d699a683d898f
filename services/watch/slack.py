"""Slack incoming webhooks: Block Kit messages for incidents, sent with bounded retries.

- ``slack_sdk.webhook.WebhookClient`` does the HTTP; its retry handlers retry a 429
  after its ``Retry-After`` and a connection error after a short back-off, a bounded
  number of times. A ``Retry-After`` longer than ``MAX_RETRY_AFTER`` is not waited
  for: the send counts as failed and the incident stays undelivered, so the
  watchdog's outbox pass tries again later (see services/alerts/__init__.py).
- Where a message goes: ``CRONWORK_SLACK_WEBHOOK_URL``, or per schedule
  ``alerts: {webhook_env: NAME}`` (the URL is read from that environment variable),
  or nowhere with ``alerts: {slack: false}``.
- The webhook URL is a secret (invariant 8): it is never logged. slack_sdk's own
  logger prints the URL at debug level and exception texts at error level, so the
  client gets a silenced logger of its own; every failure is logged here, by status
  code or exception type only, and passed through ``redact``.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from services.redact import redact
from services.schedules.spec import ScheduleSpec
from services.timeutil import as_utc, iso
from services.vocabulary import IncidentKind

logger = logging.getLogger(__name__)

#: Longest Retry-After (seconds) waited for in the sender thread.
MAX_RETRY_AFTER = 30
#: Retries per send for a 429 and for a connection error (each).
MAX_RETRIES = 2
#: Longest error text shown in a message.
MAX_ERROR_CHARS = 300


def _silent_logger() -> logging.Logger:
    quiet = logging.Logger("cronwork.slack_sdk.silenced", level=logging.CRITICAL + 1)
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    return quiet


class _BoundedRateLimit(RateLimitErrorRetryHandler):
    """Waits out a 429's Retry-After, unless it asks for longer than MAX_RETRY_AFTER."""

    def _can_retry(
        self, *, state: Any, request: Any, response: Any = None, error: Any = None
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        for key, values in (response.headers or {}).items():
            if key.lower() == "retry-after":
                try:
                    return int(values[0]) <= MAX_RETRY_AFTER
                except (ValueError, IndexError, TypeError):
                    return False
        return True


class SlackSender:
    def __init__(self, default_url: str | None, *, timeout: float = 5.0) -> None:
        self.default_url = default_url
        self.timeout = timeout
        self._quiet = _silent_logger()

    def url_for(self, spec: ScheduleSpec | None) -> str | None:
        """The webhook for a schedule's alerts; None when muted or nothing is configured."""
        if spec is not None:
            if not spec.alerts.slack:
                return None
            if spec.alerts.webhook_env:
                url = os.environ.get(spec.alerts.webhook_env)
                if url:
                    return url
                logger.warning(
                    "schedule %s: alerts.webhook_env %s is not set; using the default webhook",
                    spec.name,
                    spec.alerts.webhook_env,
                )
        return self.default_url

    def post(self, url: str, payload: dict[str, Any]) -> bool:
        """Send one message; True once Slack accepted it. Never raises, never logs the URL."""
        handlers: list[RetryHandler] = [
            _BoundedRateLimit(max_retry_count=MAX_RETRIES),
            ConnectionErrorRetryHandler(max_retry_count=MAX_RETRIES),
        ]
        client = WebhookClient(
            url, timeout=int(max(self.timeout, 1)), logger=self._quiet, retry_handlers=handlers
        )
        try:
            response = client.send_dict(payload)
        except Exception as exc:
            # The exception text is not shown: urllib errors may carry the URL.
            logger.warning(
                "slack alert not delivered: %s",
                type(exc).__name__,
                extra={"action": "slack_failed"},
            )
            return False
        if response.status_code != 200:
            logger.warning(
                "slack alert not delivered: HTTP %s %s",
                response.status_code,
                redact(str(response.body or ""))[:100],
                extra={"action": "slack_failed"},
            )
            return False
        return True


# -- messages ----------------------------------------------------------------------------

TITLES = {
    IncidentKind.FAILED: "failed",
    IncidentKind.OVERDUE: "is overdue",
    IncidentKind.STUCK: "has a stuck run",
    IncidentKind.LOST: "lost a run (its worker died)",
    IncidentKind.NEVER_ENQUEUED: "has fires that were never enqueued",
    IncidentKind.MISSED: "missed fires",
}


def _first_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return redact(line)[:MAX_ERROR_CHARS]


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return iso(as_utc(value)) or "-"
    return str(value) if value else "-"


def render(event: str, incident: Any) -> dict[str, Any]:
    """A Block Kit message for an incident: ``event`` is opened, reminder or recovered."""
    d: dict[str, Any] = dict(incident.details or {})
    name = incident.schedule
    kind = incident.kind
    if event == "recovered":
        title = f":white_check_mark: {name} recovered ({kind})"
        text = f"{name} recovered: {kind} incident #{incident.id} resolved"
    else:
        prefix = ":repeat: still open: " if event == "reminder" else ":red_circle: "
        title = f"{prefix}{name} {TITLES.get(kind, kind)}"
        text = f"{name} {TITLES.get(kind, kind)}"
        if d.get("error"):
            text += f": {_first_line(d.get('error_type'))}: {_first_line(d['error'])}"
        elif d.get("summary"):
            text += f": {_first_line(d['summary'])}"
    fields = [("Schedule", f"`{name}`")]
    if d.get("actor"):
        fields.append(("Actor", f"`{d['actor']}`"))
    if d.get("key"):  # an ad-hoc run's idempotency key (services/adhoc.py)
        fields.append(("Key", f"`{d['key']}`"))
    if d.get("scheduled_for"):
        fields.append(("Scheduled for", _when(d["scheduled_for"])))
    if d.get("attempt"):
        fields.append(("Attempt", f"{d['attempt']} of {d.get('max_attempts', '?')}"))
    if d.get("error_type") or d.get("error"):
        error = f"{d.get('error_type') or 'Error'}: {_first_line(d.get('error'))}"
        fields.append(("Error", f"`{error}`"))
    if d.get("duration_ms") is not None:
        fields.append(("Duration", f"{d['duration_ms'] / 1000:.1f}s"))
    if d.get("instance_id"):
        fields.append(("Worker", f"`{d['instance_id']}`"))
    if incident.sentry_event_id:
        fields.append(("Sentry event", f"`{incident.sentry_event_id}`"))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields[:10]],
        },
    ]
    if d.get("summary") and event != "recovered":
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _first_line(d["summary"])}}
        )
    context = f"incident #{incident.id} · {kind} · opened {_when(incident.opened_at)}"
    if incident.count > 1:
        context += f" · {incident.count} occurrences folded"
    if event == "recovered" and incident.resolved_at is not None:
        context += f" · resolved {_when(incident.resolved_at)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": redact(text), "blocks": blocks}
