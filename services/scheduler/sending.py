"""Enqueue many Dramatiq messages in one Redis round trip.

``RedisBroker.enqueue`` runs Dramatiq's ``dispatch`` Lua script once per message, one
round trip each: a burst of 10,000 fires spent most of its time waiting on those (py-spy,
bench/burst.py). ``enqueue_many`` runs the very same script call per message, with the
same arguments and the same middleware hooks around it, but queues the calls on a
pipeline and sends them together. Each script call is still atomic on its own, so what
Redis holds afterwards is what as many ``enqueue`` calls would have left.

This mirrors ``RedisBroker.enqueue`` of Dramatiq 2.x (pinned in requirements.lock),
including two of its private helpers; tests/integration/test_sending.py checks that a
worker consumes what it writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name

Message = dramatiq.Message[Any]


def enqueue_many(
    broker: dramatiq.Broker, items: Sequence[tuple[Message, int | None]]
) -> tuple[list[Message], Exception | None]:
    """Enqueue each ``(message, delay in ms)``; return the enqueued copies, in order, of
    the leading run that succeeded, and the error that stopped the rest (or None).

    A connection error loses the whole pipeline's answer: none of it counts as sent, so
    those fires stay pending and go out again with the same message ids (a copy that did
    reach Redis is then a duplicate delivery, which the worker's claim skips).
    """
    if not isinstance(broker, RedisBroker):
        return _one_by_one(broker, items)
    copies: list[tuple[Message, int | None]] = []
    pipe = broker.client.pipeline(transaction=False)
    dispatch = broker.scripts["dispatch"]
    try:
        for message, delay in items:
            copy = _redis_copy(message, delay)
            broker.emit_before("enqueue", copy, delay)
            args = [
                "enqueue",
                current_millis(),
                copy.queue_name,
                broker.broker_id,
                broker.heartbeat_timeout,
                broker.dead_message_ttl,
                broker._should_do_maintenance("enqueue"),
                broker._max_unpack_size(),
                copy.options["redis_message_id"],
                copy.encode(),
            ]
            dispatch(keys=[broker.namespace], args=args, client=pipe)
            copies.append((copy, delay))
        results = pipe.execute(raise_on_error=False)
    except Exception as exc:
        return [], exc
    sent: list[Message] = []
    for (copy, delay), result in zip(copies, results, strict=True):
        if isinstance(result, Exception):
            return sent, result
        broker.emit_after("enqueue", copy, delay)
        sent.append(copy)
    return sent, None


def _redis_copy(message: Message, delay: int | None) -> Message:
    # As RedisBroker.enqueue: a Redis id of its own per enqueue (a retry is a new copy),
    # and a delayed message goes to the delay queue with its eta.
    copy = message.copy(options={"redis_message_id": str(uuid4())})
    if delay is not None:
        copy = copy.copy(
            queue_name=dq_name(copy.queue_name), options={"eta": current_millis() + delay}
        )
    return copy


def _one_by_one(
    broker: dramatiq.Broker, items: Sequence[tuple[Message, int | None]]
) -> tuple[list[Message], Exception | None]:
    sent: list[Message] = []
    try:
        for message, delay in items:
            sent.append(broker.enqueue(message, delay=delay))
    except Exception as exc:
        return sent, exc
    return sent, None
