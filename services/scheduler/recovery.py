"""The leader's search for fires whose message the broker no longer has.

A fire that is ``enqueued`` or ``retrying`` waits for a message that sits in the broker.
A Redis that restarts empty, or loses its last second of writes, loses that message, and
the fire would wait for ever. Each pass the leader asks, for fires unchanged for a while,
whether their message is still there (services/message_refs.py) and puts back to
``pending`` those whose message is gone: the re-send step then sends them again with the
same message id (and, for a retry, the same attempt number), so should the message turn
up after all, the worker's claim runs only one of the two.

It also runs Dramatiq's queue maintenance on every queue, which gives the unacknowledged
messages of a dead worker back to the queue: Dramatiq itself runs it on 0.1 % of its
calls, which can take very long on a quiet queue (dramatiq #527).

Embedded mode's queue lives in this process's memory: a fire left waiting by an earlier
process has lost its message by definition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

from services.broker import dramatiq_namespace
from services.message_refs import MessageRefs
from services.settings import Settings
from services.store.fence import Fence, Waiting
from services.timeutil import utcnow

logger = logging.getLogger(__name__)

#: A fire's message may take this long to show up after its status changed: the send of
#: a burst, a retry being enqueued by its worker.
SETTLE = timedelta(seconds=15)


class Recovery:
    def __init__(
        self,
        fence: Fence,
        refs: MessageRefs | None,
        maintenance: RedisBroker | None,
        queues: Iterable[str],
        started_at: datetime | None = None,
        settle: timedelta = SETTLE,
    ) -> None:
        self.fence = fence
        self.settle = settle
        self.refs = refs
        self.maintenance = maintenance
        self.queues = sorted(set(queues))
        #: Embedded mode: waiting since before this process started means lost.
        self.started_at = started_at or utcnow()

    @classmethod
    def from_settings(cls, settings: Settings, fence: Fence, queues: Iterable[str]) -> Recovery:
        url = settings.redis_url_value()
        if url is None:
            return cls(fence, None, None, queues)
        client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        namespace = dramatiq_namespace(settings)
        maintenance = RedisBroker(
            client=client,
            namespace=namespace,
            middleware=[],
            # Every call of this broker runs Dramatiq's maintenance; it makes none but those.
            maintenance_chance=MAINTENANCE_SCALE,
        )
        return cls(fence, MessageRefs(client, namespace), maintenance, queues)

    def resend_lost(self) -> int:
        """Put back to pending every waiting fire whose message is gone; how many."""
        waiting = self.fence.waiting(self.settle)
        if not waiting:
            return 0
        lost = self._lost(waiting)
        requeued = [w for w in lost if self.fence.requeue_lost(w, "message lost by the broker")]
        if requeued:
            logger.warning(
                "%d fire(s) lost their message in the broker (a Redis restart?); sending them "
                "again with the same message id: %s",
                len(requeued),
                ", ".join(f"{w.schedule}#{w.id}" for w in requeued[:10])
                + (" ..." if len(requeued) > 10 else ""),
                extra={"action": "messages_lost", "count": len(requeued)},
            )
        return len(requeued)

    def _lost(self, waiting: list[Waiting]) -> list[Waiting]:
        if self.refs is None:
            return [w for w in waiting if w.updated_at < self.started_at]
        gone = self.refs.missing([w.message_id for w in waiting])
        return [w for w in waiting if w.message_id in gone]

    def run_maintenance(self) -> None:
        """Dramatiq's maintenance on every queue: a dead worker's messages go back."""
        if self.maintenance is None:
            return
        for queue in self.queues:
            for name in (queue, f"{queue}.DQ"):
                self.maintenance.do_qsize(name)
