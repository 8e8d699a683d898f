"""Send won fires to the broker, note where each message sits, then mark them enqueued.

The fire row was written first (the fence); a fire whose send fails stays ``pending`` and
the leader sends it again, with the same message id (docs/design.md, sending).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dramatiq

from services import metrics
from services.message_refs import MessageRefs
from services.outages import DATABASE, REDIS, dependency_of
from services.redact import redact
from services.scheduler.sending import enqueue_many
from services.store.fence import Fence, Fire
from services.timeutil import iso, utcnow

logger = logging.getLogger(__name__)

#: A fire and the copy of its message the broker holds.
Sent = tuple[Fire, dramatiq.Message[Any]]

#: Chunks of up to this many sent fires log a line each; a bigger one logs one line.
FIRE_LINES_UP_TO = 50
#: Messages per Redis pipeline: one round trip each (services/scheduler/sending.py).
SEND_CHUNK = 500


class Dispatcher:
    def __init__(
        self,
        broker: dramatiq.Broker,
        fence: Fence,
        may_send: Callable[[], bool] = lambda: True,
    ) -> None:
        self.broker = broker
        self.fence = fence
        self.refs = MessageRefs.of(broker)
        #: The lease, checked before each chunk goes out: a replica whose lease may have
        #: expired stops sending, and what it won stays pending for the next leader.
        self.may_send = may_send

    def send(self, batch: list[Fire]) -> int:
        """Send each fire's message; on a broker error stop: the rest stay pending for re-send."""
        return self.settle(self.push(batch))

    def push(self, batch: list[Fire]) -> list[Sent]:
        """Put the fires' messages in the broker, chunk by chunk, each chunk's references
        right after it; the fires stay ``pending`` until ``settle``.

        Marking them is left to ``settle`` so that a burst's scheduler can mark one chunk
        while it sends the next (services/scheduler/fenced.py): the update, on a table
        with seven indexes, took as long as the sends it followed.
        """
        sent: list[Sent] = []
        for start in range(0, len(batch), SEND_CHUNK):
            if not self.may_send():
                logger.warning(
                    "lease lost; %d won fire(s) left pending for the next leader",
                    len(batch) - start,
                    extra={"action": "send_stopped"},
                )
                break
            chunk = batch[start : start + SEND_CHUNK]
            chunk_sent = self._send_chunk(chunk)
            # Before marking them enqueued: the leader looks for lost messages of enqueued
            # fires only, and finds a fire whose reference is missing as lost.
            self._record_refs([message for _, message in chunk_sent])
            sent += chunk_sent
            if len(chunk_sent) < len(chunk):
                break  # the broker failed: the rest waits for the re-send
        return sent

    def settle(self, sent: list[Sent]) -> int:
        """Mark what ``push`` put in the broker ``enqueued``."""
        if not sent:
            return 0
        # Whatever reached the broker is marked, even if a later send failed. A fire that
        # cannot be marked stays pending and is sent again: the worker's claim then runs
        # only one of the two deliveries.
        try:
            self.fence.mark_enqueued([fire.id for fire, _ in sent])
            DATABASE.ok()
        except Exception as exc:
            (dependency_of(exc) or DATABASE).failed("mark sent fires enqueued", exc)
        # One INFO line per fire, as someone watching the log expects; a burst of hundreds
        # in one chunk gets one line for the lot (10,000 lines in the second that matters
        # cost the last fire of a burst a third of a second), and each fire at DEBUG.
        each = logging.INFO
        if len(sent) > FIRE_LINES_UP_TO:
            each = logging.DEBUG
            first, last = sent[0][0], sent[-1][0]
            logger.info(
                "%d fire(s) sent (%s %s .. %s %s)",
                len(sent),
                first.schedule,
                iso(first.scheduled_for),
                last.schedule,
                iso(last.scheduled_for),
                extra={"action": "fires_sent", "count": len(sent)},
            )
        if logger.isEnabledFor(each):
            for fire, _ in sent:
                due = iso(fire.scheduled_for)
                logger.log(
                    each,
                    "%s %s sent",
                    fire.schedule,
                    due,
                    extra={
                        "action": "fire_sent",
                        "schedule": fire.schedule,
                        "scheduled_for": due,
                        "fire_id": fire.id,
                    },
                )
        return len(sent)

    def _send_chunk(self, batch: list[Fire]) -> list[Sent]:
        for queue in {fire.message["queue_name"] for fire in batch}:
            if queue not in self.broker.get_declared_queues():
                self.broker.declare_queue(queue)
        copies, error = enqueue_many(self.broker, [self._message(fire) for fire in batch])
        sent = list(zip(batch, copies, strict=False))
        for fire, _ in sent:
            metrics.record_enqueued(fire.message, fire.scheduled_for)
        if sent:
            REDIS.ok()
        if error is not None:
            left = len(batch) - len(sent)
            dependency = dependency_of(error)
            if dependency is not None:
                dependency.failed(f"send {left} fire(s) (left pending for re-send)", error)
            else:
                logger.warning(
                    "could not send %d fire(s); left pending for re-send: %s",
                    left,
                    redact(str(error)),
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

    def _message(self, fire: Fire) -> tuple[dramatiq.Message[Any], int | None]:
        """The fire's Dramatiq message as stored with its row, and its delay in ms."""
        m = fire.message
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=m["queue_name"],
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
        return message, delay
