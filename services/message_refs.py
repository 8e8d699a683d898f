"""Is a fire's message still in the broker? Message references kept beside Dramatiq's queues.

Dramatiq's Redis broker keeps every queued, delayed or taken-but-unacknowledged message
in a hash ``<namespace>:<queue>.msgs`` (``<queue>.DQ.msgs`` while delayed) keyed by a
*Redis* message id that it draws anew on every enqueue (a retry, a delayed message
becoming due). So after each enqueue of a cronwork message we write, under
``<namespace>:msgref:<dramatiq message id>``, where its newest copy sits: the Redis queue
name and that Redis id. The leader then asks, per fire still waiting for its message,
whether that entry exists — atomically, in one small Lua script.

The references live beside the queues, under the broker's namespace (itself under
``CRONWORK_REDIS_PREFIX``), so whatever holds the broker can write and read them.

A Redis that restarts empty (or loses its last second of writes) loses the message and
its reference together, which reads as "missing": the leader re-sends the fire with the
same message id (services/scheduler/recovery.py). A reference that could not be written
reads as missing too; the re-send is then a duplicate delivery, which the worker's claim
records as skipped and never runs (services/store/attempts.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from services.constants import FIRE_OPTION, MESSAGE_REF_KEY
from services.outages import REDIS, dependency_of

logger = logging.getLogger(__name__)

#: A reference outlives any delay Dramatiq allows (7 days) by a day.
REF_TTL_SECONDS = 8 * 86400
#: Returns 1 when the referenced copy exists, 0 when it or the reference is gone.
_PRESENT = """
local ref = redis.call('get', KEYS[1])
if not ref then return 0 end
local sep = string.find(ref, '\\n', 1, true)
if not sep then return 0 end
local queue = string.sub(ref, 1, sep - 1)
local id = string.sub(ref, sep + 1)
return redis.call('hexists', ARGV[1] .. ':' .. queue .. '.msgs', id)
"""


def ref_key(namespace: str, message_id: str) -> str:
    return f"{namespace}:{MESSAGE_REF_KEY}:{message_id}"


class MessageRefs:
    """Write and check references for the messages of one Dramatiq namespace."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._present = client.register_script(_PRESENT)

    @classmethod
    def of(cls, broker: dramatiq.Broker) -> MessageRefs | None:
        """The references of a Redis broker's messages; None for the in-memory broker."""
        if not isinstance(broker, RedisBroker):
            return None
        return cls(broker.client, broker.namespace)

    def record(self, messages: Iterable[dramatiq.Message[Any]]) -> None:
        """Remember where each enqueued copy sits (``broker.enqueue`` returns the copy)."""
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for message in messages:
            redis_id = message.options.get("redis_message_id")
            if redis_id is None or FIRE_OPTION not in message.options:
                continue
            value = f"{message.queue_name}\n{redis_id}"
            pipe.set(ref_key(self.namespace, message.message_id), value, ex=REF_TTL_SECONDS)
            count += 1
        if count:
            pipe.execute()

    def missing(self, message_ids: Sequence[str]) -> set[str]:
        """The ids among ``message_ids`` whose message is in none of the broker's queues."""
        if not message_ids:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            self._present(
                keys=[ref_key(self.namespace, message_id)], args=[self.namespace], client=pipe
            )
        found = pipe.execute()
        return {m for m, present in zip(message_ids, found, strict=True) if not present}


class RecordRefs(Middleware):
    """Keeps references current for what a worker enqueues: retries, delayed messages that
    became due, messages it put back because their start could not be recorded."""

    def __init__(self) -> None:
        # Made on first use, in the worker process (Dramatiq spawns its workers).
        self._refs: MessageRefs | None = None

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        try:
            if self._refs is None:
                self._refs = MessageRefs.of(broker)
            if self._refs is not None:
                self._refs.record([message])
            REDIS.ok()
        except Exception as exc:
            # Read as "missing" later; the re-send it causes is recorded as a duplicate.
            dependency = dependency_of(exc)
            if dependency is not None:
                dependency.failed("record a message reference", exc)
            else:
                logger.warning("could not record where message %s sits", message.message_id)
