"""Send won fires to the broker, note where each message sits, then mark them enqueued.

The fire row was written first (the fence); a fire whose send fails stays ``pending`` and
the leader sends it again, with the same message id (docs/design.md, sending).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import dramatiq

from services import metrics
from services.message_refs import MessageRefs
from services.outages import DATABASE, REDIS, dependency_of
from services.redact import redact
from services.store.fence import Fence, Fire
from services.timeutil import iso, utcnow

logger = logging.getLogger(__name__)

#: Batches larger than this are sent over several connections at once.
PARALLEL_ABOVE = 64
#: How many connections send a burst.
SENDER_THREADS = 4


class Dispatcher:
    def __init__(self, broker: dramatiq.Broker, fence: Fence) -> None:
        self.broker = broker
        self.fence = fence
        self.refs = MessageRefs.of(broker)

    def send(self, batch: list[Fire]) -> int:
        """Send each fire's message; on a broker error stop: the rest stay pending for re-send."""
        if len(batch) <= PARALLEL_ABOVE:
            sent = self._send_serially(batch)
        else:
            # A burst: each send is a Redis round trip running Dramatiq's enqueue script;
            # a few connections in parallel cut the wait for the last fire of the burst.
            slices = [batch[i::SENDER_THREADS] for i in range(SENDER_THREADS)]
            with ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="cronwork-send") as pool:
                sent = [pair for part in pool.map(self._send_serially, slices) for pair in part]
        if not sent:
            return 0
        # Before marking them enqueued: the leader looks for lost messages of enqueued fires
        # only, and finds a fire whose reference is missing as lost.
        self._record_refs([message for _, message in sent])
        # Whatever reached the broker is marked, even if a later send failed. A fire that
        # cannot be marked stays pending and is sent again: the worker's claim then runs
        # only one of the two deliveries.
        try:
            self.fence.mark_enqueued([fire.id for fire, _ in sent])
            DATABASE.ok()
        except Exception as exc:
            (dependency_of(exc) or DATABASE).failed("mark sent fires enqueued", exc)
        for fire, _ in sent:
            logger.info(
                "%s %s sent",
                fire.schedule,
                iso(fire.scheduled_for),
                extra={
                    "action": "fire_sent",
                    "schedule": fire.schedule,
                    "scheduled_for": iso(fire.scheduled_for),
                    "fire_id": fire.id,
                },
            )
        return len(sent)

    def _send_serially(self, batch: list[Fire]) -> list[tuple[Fire, dramatiq.Message[Any]]]:
        sent: list[tuple[Fire, dramatiq.Message[Any]]] = []
        try:
            for fire in batch:
                sent.append((fire, self._enqueue(fire)))
                metrics.record_enqueued(fire.message, fire.scheduled_for)
            if sent:
                REDIS.ok()
        except Exception as exc:
            left = len(batch) - len(sent)
            dependency = dependency_of(exc)
            if dependency is not None:
                dependency.failed(f"send {left} fire(s) (left pending for re-send)", exc)
            else:
                logger.warning(
                    "could not send %d fire(s); left pending for re-send: %s",
                    left,
                    redact(str(exc)),
                    extra={"action": "enqueue_failed"},
                )
        return sent

    def _record_refs(self, messages: list[dramatiq.Message[Any]]) -> None:
        if self.refs is None:
            return
        try:
            self.refs.record(messages)
        except Exception as exc:
            # Read as lost later; the re-send that causes is skipped as a duplicate.
            (dependency_of(exc) or REDIS).failed("record where sent messages sit", exc)

    def resend_pending(self, older_than: float, now: datetime | None = None) -> int:
        batch = self.fence.pending(older_than, now=now)
        if batch:
            logger.warning(
                "re-sending %d fire(s) left pending", len(batch), extra={"action": "resend_pending"}
            )
        sent = self.send(batch)
        metrics.record_resent(sent)
        return sent

    def _enqueue(self, fire: Fire) -> dramatiq.Message[Any]:
        m = fire.message
        queue = m["queue_name"]
        if queue not in self.broker.get_declared_queues():
            self.broker.declare_queue(queue)
        message: dramatiq.Message[object] = dramatiq.Message(
            queue_name=queue,
            actor_name=m["actor_name"],
            args=tuple(m["args"]),
            kwargs=dict(m["kwargs"]),
            options=dict(m["options"]),
            message_id=fire.message_id,
        )
        delay = None
        if m.get("jitter_ms"):
            due = fire.scheduled_for + timedelta(milliseconds=m["jitter_ms"])
            delay = max(0, int((due - utcnow()).total_seconds() * 1000)) or None
        return self.broker.enqueue(message, delay=delay)
