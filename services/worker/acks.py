"""Acknowledge a tracked message once its outcome is committed, with no worker thread
waiting for either.

Dramatiq acknowledges a message from the worker thread that ran it, right after the
after-hooks: one round trip to Redis per message. The outcome must be committed before
that (docs/design.md: nothing is acknowledged before it is durable), so the thread used to
wait for its outcome's batch to commit, then for Redis, and only then take its next
message: about two milliseconds a message on which nothing ran.

Now tracking queues the outcome in the batch writer (services/store/group_commit.py) and
``hold``s the acknowledgement; when Dramatiq asks the consumer to acknowledge, the
consumer hands it to one thread per process and the worker thread takes its next message
at once, its outcome riding in the same batch as its next claim. That thread waits for
each held outcome's commit, then sends every acknowledgement that is ready in one
pipeline, each one Dramatiq's own script. The order is the one that matters, as before:
the outcome committed, then the acknowledgement. A worker killed in between leaves its
message unacknowledged, and Dramatiq gives it to another worker, whose claim finds the
fire decided and skips it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from services.redact import redact
from services.store.attempts import Outcome
from services.store.group_commit import Pending
from services.worker.outcomes import OutcomeWriter

logger = logging.getLogger(__name__)

#: How long a worker's shutdown waits for the acknowledgements still held.
FLUSH_SECONDS = 30.0
#: Between two tries to send acknowledgements while Redis is away, doubling up to the max.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0


#: Dramatiq's acknowledgement (``ack`` in dramatiq/brokers/redis/dispatch.lua) of many
#: messages of one queue in one call: packing a command costs the sender's interpreter by
#: its arguments, and Dramatiq's script takes one message and twelve arguments. Returns
#: the messages it did not find where Dramatiq 2 keeps them, for Dramatiq's own script
#: to acknowledge: a later Dramatiq that keeps them elsewhere costs speed, not
#: correctness (tests/integration/test_held_acks.py checks this one finds them).
#: KEYS: namespace. ARGV: timestamp, queue, worker id, then the messages' Redis ids.
ACK_MANY = """
local namespace = KEYS[1]
local worker_id = ARGV[3]
redis.call("zadd", namespace .. ":__heartbeats__", ARGV[1], worker_id)
local acks = namespace .. ":__acks__." .. worker_id .. "." .. ARGV[2]
local messages = namespace .. ":" .. ARGV[2] .. ".msgs"
local missed = {}
for i = 4, #ARGV do
    if redis.call("srem", acks, ARGV[i]) > 0 then
        redis.call("hdel", messages, ARGV[i])
    else
        missed[#missed + 1] = ARGV[i]
    end
end
return missed
"""


@dataclass(slots=True)
class _Held:
    """An outcome queued in the batch writer, its message not acknowledged yet."""

    message_id: str
    pending: Pending
    outcome: Outcome
    writer: OutcomeWriter


@dataclass(slots=True)
class _Ack:
    command: str  # Dramatiq's "ack", or "nack" for a message that failed for good
    queue: str
    redis_id: str
    held: _Held


class HeldAcks:
    """The acknowledgements a worker process holds until their outcomes are committed."""

    def __init__(self) -> None:
        self._broker: RedisBroker | None = None
        self._local = threading.local()
        self._queue: deque[_Ack] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        #: Acknowledgements handed over and not yet sent (``flush`` waits for none).
        self._unsent = 0
        self._closed = False
        self._ack_many: Any = None

    def bind(self, broker: RedisBroker) -> None:
        self._broker = broker

    # -- worker threads --------------------------------------------------------------

    def hold(
        self, message_id: str, pending: Pending, outcome: Outcome, writer: OutcomeWriter
    ) -> None:
        """Hold this thread's next acknowledgement of ``message_id`` until ``pending`` is
        committed; ``writer`` writes the outcome again if its batch failed."""
        self._local.held = _Held(message_id, pending, outcome, writer)

    def release(self, command: str, consumer: Any, message: MessageProxy) -> bool:
        """Hand the held acknowledgement of ``message`` over to the sending thread; False
        when nothing is held for it (Dramatiq acknowledges it itself)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.message_id != message.message_id or self._broker is None:
            return False
        self._local.held = None
        ack = _Ack(command, consumer.queue_name, message.options["redis_message_id"], held)
        # Off the consumer's count now, as Dramatiq's own ack does, though Redis still
        # holds it: counted until sent, held messages would stop the prefetch, and the
        # consumer backs off when it fetches nothing. Few are held at a time: a thread's
        # outcome is committed with its next claim, before its next message runs.
        consumer.queued_message_ids.discard(message.message_id)
        with self._wake:
            self._queue.append(ack)
            self._unsent += 1
            self._wake.notify()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cronwork-acks", daemon=True)
                self._thread.start()
        return True

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until every acknowledgement handed over is sent; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._unsent:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning(
                        "%d messages not acknowledged at shutdown: Dramatiq will deliver "
                        "them again, and their fires' recorded outcomes skip them",
                        self._unsent,
                    )
                    return False
                self._wake.wait(left)
        return True

    def close(self) -> None:
        """The broker closes: the sending thread ends once it has sent what it holds."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    # -- the sending thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    if self._closed:
                        self._thread = None
                        return
                    self._wake.wait()
                acks = list(self._queue)
                self._queue.clear()
            _settle(acks)
            self._send(acks)
            with self._wake:
                self._unsent -= len(acks)
                self._wake.notify_all()

    def _send(self, acks: list[_Ack]) -> None:
        """Send the acknowledgements, retried until Redis takes them (as Dramatiq retries
        its own); each one is harmless sent twice."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                self._send_once(acks)
                return
            except redis.RedisError as exc:
                logger.warning(
                    "could not acknowledge %d messages, retrying in %.1fs: %s",
                    len(acks),
                    delay,
                    redact(str(exc)),
                )
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _send_once(self, acks: list[_Ack]) -> None:
        """The acks of each queue in one call of ``ACK_MANY``; the nacks, and any ack it did
        not find, with Dramatiq's own script (one call each, in one round trip)."""
        broker = self._broker
        assert broker is not None
        if self._ack_many is None:
            self._ack_many = broker.client.register_script(ACK_MANY)
        now = current_millis()
        by_queue: dict[str, list[str]] = {}
        one_by_one: list[tuple[str, str, str]] = []  # command, queue, Redis id
        for ack in acks:
            if ack.command == "ack":
                by_queue.setdefault(ack.queue, []).append(ack.redis_id)
            else:
                one_by_one.append((ack.command, ack.queue, ack.redis_id))
        for queue, ids in by_queue.items():
            # A Script call loads the script again into a Redis that forgot it.
            missed = self._ack_many(
                keys=[broker.namespace], args=[now, queue, broker.broker_id, *ids]
            )
            one_by_one += [("ack", queue, _text(m)) for m in missed]
        if not one_by_one:
            return
        script = broker.scripts["dispatch"]
        pipe = broker.client.pipeline(transaction=False)
        for command, queue, redis_id in one_by_one:
            # The arguments of RedisBroker._dispatch, maintenance off: the consumers'
            # fetches do it.
            script(
                keys=[broker.namespace],
                args=[
                    command,
                    now,
                    queue,
                    broker.broker_id,
                    broker.heartbeat_timeout,
                    broker.dead_message_ttl,
                    0,
                    broker._max_unpack_size(),
                    redis_id,
                ],
                client=pipe,
            )
        pipe.execute()


def _settle(acks: list[_Ack]) -> None:
    """Wait for each outcome's commit; an outcome whose batch failed is written again
    (services/worker/outcomes.py), the first one retried for a while, the rest, the
    database being away, tried once before they go to the background writer."""
    retried = False
    for ack in acks:
        try:
            ack.held.pending.wait()
        except Exception:  # the writer logs what failed, and retries
            ack.held.writer.record(ack.held.outcome, inline=not retried)
            retried = True


class _HeldAckConsumer(Consumer):
    """Dramatiq's Redis consumer, its acknowledgements of tracked messages held."""

    def __init__(self, inner: Any, acks: HeldAcks) -> None:
        self._inner = inner
        self._acks = acks

    def __next__(self) -> MessageProxy | None:
        message: MessageProxy | None = next(self._inner)
        return message

    def ack(self, message: MessageProxy) -> None:
        if not self._acks.release("ack", self._inner, message):
            self._inner.ack(message)

    def nack(self, message: MessageProxy) -> None:
        if not self._acks.release("nack", self._inner, message):
            self._inner.nack(message)

    def requeue(self, messages: Any) -> None:
        self._inner.requeue(messages)

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class HeldAckBroker(RedisBroker):
    """The worker's Redis broker: tracked messages acknowledged once their outcomes are
    committed (``HeldAcks``)."""

    def __init__(self, *args: Any, acks: HeldAcks, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held_acks = acks
        acks.bind(self)

    def close(self) -> None:
        self.held_acks.close()
        super().close()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        return _HeldAckConsumer(super().consume(queue_name, prefetch, timeout), self.held_acks)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
