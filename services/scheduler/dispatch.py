"""Send won fires to the broker, then mark them enqueued."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import dramatiq

from services import metrics
from services.redact import redact
from services.store.fence import Fence, Fire
from services.timeutil import utcnow

logger = logging.getLogger(__name__)

#: Batches larger than this are sent over several connections at once.
PARALLEL_ABOVE = 64
#: How many connections send a burst.
SENDER_THREADS = 4


class Dispatcher:
    def __init__(self, broker: dramatiq.Broker, fence: Fence) -> None:
        self.broker = broker
        self.fence = fence

    def send(self, batch: list[Fire]) -> int:
        """Send each fire's message; on a broker error stop: the rest stay pending for re-send."""
        if len(batch) <= PARALLEL_ABOVE:
            sent = self._send_serially(batch)
        else:
            # A burst: each send is a Redis round trip running Dramatiq's enqueue script;
            # a few connections in parallel cut the wait for the last fire of the burst.
            slices = [batch[i::SENDER_THREADS] for i in range(SENDER_THREADS)]
            with ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="cronwork-send") as pool:
                sent = [fid for part in pool.map(self._send_serially, slices) for fid in part]
        # Whatever reached the broker is marked, even if a later send failed.
        self.fence.mark_enqueued(sent)
        return len(sent)

    def _send_serially(self, batch: list[Fire]) -> list[int]:
        sent: list[int] = []
        try:
            for fire in batch:
                self._enqueue(fire)
                sent.append(fire.id)
                metrics.record_enqueued(fire.message, fire.scheduled_for)
        except Exception as exc:
            logger.warning(
                "broker unavailable: %d fire(s) left pending for re-send: %s",
                len(batch) - len(sent),
                redact(str(exc)),
                extra={"action": "enqueue_failed"},
            )
        return sent

    def resend_pending(self, older_than: float) -> int:
        batch = self.fence.pending(older_than)
        if batch:
            logger.warning(
                "re-sending %d fire(s) left pending", len(batch), extra={"action": "resend_pending"}
            )
        sent = self.send(batch)
        metrics.record_resent(sent)
        return sent

    def _enqueue(self, fire: Fire) -> None:
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
        self.broker.enqueue(message, delay=delay)
