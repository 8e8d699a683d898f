"""Alerts: incidents in the database, messages to Slack, errors and check-ins to Sentry.

The :class:`Alerter` is the one way in. Nothing it does may block or break the job
path or the leader's loop:

- ``final_failure`` (called from a worker's middleware hook) only puts an item on a
  bounded queue (``QUEUE_SIZE``; when full the item is dropped with a warning: the
  watchdog's backstop still finds the failed fire row). A daemon thread records the
  incident and posts to Slack.
- ``finding`` / ``resolve`` (called from the watchdog's own thread) write the
  incident row synchronously and queue the Slack post.
- The database is the outbox: an incident whose opening or recovery message was not
  delivered (Slack down) has ``last_notified_at`` / ``recovery_notified_at`` NULL, and
  ``redeliver`` (run by the watchdog each pass) tries again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from services.redact import redact
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.incidents import Incident, IncidentStore
from services.timeutil import utcnow
from services.vocabulary import IncidentKind
from services.watch.slack import SlackSender, render

logger = logging.getLogger(__name__)

#: Alert work items waiting for the sender thread; more are dropped (and logged).
QUEUE_SIZE = 1000
#: An undelivered message is retried by the watchdog once it is this old (seconds),
#: so the thread that opened it gets the first go; and no longer after a day.
REDELIVER_AFTER = 30.0
REDELIVER_FOR = 86400.0


@dataclass(frozen=True)
class FailureInfo:
    """What a worker knows about a fire that just failed for good."""

    schedule: str
    fire_id: int | None
    message_id: str
    actor: str
    scheduled_for: str | None
    attempt: int  # 1-based
    max_attempts: int | None
    error_type: str
    error: str
    duration_ms: int
    instance_id: str
    status: str  # failed | timed_out
    sentry_event_id: str | None = None
    #: An ad-hoc run's idempotency key (services/adhoc.py).
    key: str | None = None

    def details(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "scheduled_for": self.scheduled_for,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "error_type": self.error_type,
            "error": redact(self.error)[:2000],
            "duration_ms": self.duration_ms,
            "instance_id": self.instance_id,
            "status": self.status,
            "message_id": self.message_id,
            **({"key": self.key} if self.key is not None else {}),
        }

    def subject(self) -> str:
        """``fire 12 attempt 3``; an ad-hoc run's names its actor and key too."""
        text = f"fire {self.fire_id} attempt {self.attempt}"
        if self.key is not None:
            text += f" of {self.actor} key {self.key}"
        return redact(text)[:200]


class Alerter:
    def __init__(
        self,
        store_factory: Callable[[], IncidentStore],
        slack: SlackSender,
        specs: dict[str, ScheduleSpec],
    ) -> None:
        self._store_factory = store_factory
        self._store: IncidentStore | None = None
        self.slack = slack
        self.specs = specs
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0
        #: What "now" is for the incidents a worker's failure opens or folds (a test may
        #: move it forward rather than wait).
        self.clock: Callable[[], datetime] = utcnow

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        specs: dict[str, ScheduleSpec],
        engine_factory: Callable[[], Engine],
    ) -> Alerter:
        url = settings.slack_webhook_url
        return cls(
            lambda: IncidentStore(engine_factory(), settings.alert_reminder),
            SlackSender(url.get_secret_value() if url is not None else None),
            specs,
        )

    @property
    def store(self) -> IncidentStore:
        # Built lazily, in the process (and after the fork) that uses it.
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._store_factory()
        return self._store

    # -- entry points ------------------------------------------------------------

    def final_failure(self, info: FailureInfo) -> bool:
        """Queue the alert for a fire that failed for good; never blocks."""
        return self._submit(lambda: self._record_failure(info))

    def finding(
        self,
        kind: IncidentKind,
        schedule: str,
        now: datetime,
        *,
        details: dict[str, Any],
        fire_id: int | None = None,
        subject: str | None = None,
    ) -> Incident:
        outcome = self.store.record(
            kind, schedule, now, details=details, fire_id=fire_id, subject=subject
        )
        if outcome.action == "opened":
            self._submit(lambda: self._deliver("opened", outcome.incident))
        elif outcome.remind:
            self._submit(lambda: self._deliver("reminder", outcome.incident))
        return outcome.incident

    def resolve(self, incident: Incident, now: datetime) -> Incident | None:
        resolved = self.store.resolve(incident.id, now)
        if resolved is not None and resolved.last_notified_at is not None:
            self._submit(lambda: self._deliver("recovered", resolved))
        return resolved

    def redeliver(self, now: datetime) -> int:
        """Queue every owed opening/recovery message again (Slack was down)."""
        owed = self.store.undelivered(now, min_age=REDELIVER_AFTER, max_age=REDELIVER_FOR)
        for inc in owed:
            event = "opened" if inc.resolved_at is None else "recovered"
            self._submit(lambda inc=inc, event=event: self._deliver(event, inc))  # type: ignore[misc]
        return len(owed)

    def join(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is handled (tests, shutdown)."""
        done = threading.Event()
        if not self._submit(done.set):
            return False
        return done.wait(timeout)

    # -- the sender thread --------------------------------------------------------

    def _submit(self, work: Callable[[], None]) -> bool:
        self._ensure_thread()
        try:
            self._queue.put_nowait(work)
            return True
        except queue.Full:
            self.dropped += 1
            logger.warning(
                "alert queue full (%d); alert dropped",
                QUEUE_SIZE,
                extra={"action": "alert_dropped"},
            )
            return False

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="cronwork-alerts", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            try:
                work()
            except Exception as exc:
                logger.error(
                    "alert delivery error: %s: %s",
                    type(exc).__name__,
                    redact(str(exc)),
                    extra={"action": "alert_error"},
                )

    def _record_failure(self, info: FailureInfo) -> None:
        outcome = self.store.record(
            IncidentKind.FAILED,
            info.schedule,
            self.clock(),
            details=info.details(),
            fire_id=info.fire_id,
            subject=info.subject(),
            sentry_event_id=info.sentry_event_id,
        )
        if outcome.action == "opened":
            self._deliver("opened", outcome.incident)
        elif outcome.remind:
            self._deliver("reminder", outcome.incident)
        else:
            logger.info(
                "%s failed again; folded into incident #%d (%d so far)",
                info.schedule,
                outcome.incident.id,
                outcome.incident.count,
                extra={"action": "incident_folded", "schedule": info.schedule},
            )

    def _deliver(self, event: str, incident: Incident) -> None:
        url = self.slack.url_for(self.specs.get(incident.schedule))
        ok = True
        if url is not None:
            ok = self.slack.post(url, render(event, incident))
        if not ok:
            return  # stays owed; the watchdog's redeliver tries again
        if event == "opened":
            self.store.mark_notified(incident.id, self.clock())
        elif event == "recovered":
            self.store.mark_notified(incident.id, self.clock(), recovery=True)
        logger.info(
            "incident #%d %s %s: %s",
            incident.id,
            incident.kind,
            incident.schedule,
            event if url is not None else f"{event} (slack not configured or muted)",
            extra={"action": f"incident_{event}", "schedule": incident.schedule},
        )
