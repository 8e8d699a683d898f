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
each held outcome's commit, then sends every acknowledgement that is ready in one round
trip (``ACK_MANY``). The order is the one that matters, as before: the outcome
committed, then the acknowledgement. A worker killed in between leaves its message
unacknowledged, and Dramatiq gives it to another worker, whose claim finds the fire
decided and skips it. An outcome Postgres would not take for a while goes to the
background writer, and its message is acknowledged once that wrote it.

Dramatiq's ``after_ack`` and ``after_nack`` hooks now run when the acknowledgement is
handed over, before it is sent; no middleware of the worker's uses them.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from services.logs import flush_logs
from services.redact import redact
from services.store.attempts import Outcome
from services.store.group_commit import Pending
from services.worker.outcomes import INLINE_RETRY_SECONDS, OutcomeWriter

logger = logging.getLogger(__name__)

#: How long a worker's shutdown waits for the acknowledgements still held: as long as an
#: outcome whose batch failed is retried before it goes to the background writer.
FLUSH_SECONDS = INLINE_RETRY_SECONDS
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
    #: Its outcome is known to be written (by the background writer): send it.
    settled: bool = False


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
        self._warned = False
        self._ack_many: Any = None

    def bind(self, broker: RedisBroker) -> None:
        self._broker = broker
        self._ack_many = broker.client.register_script(ACK_MANY)

    # -- worker threads --------------------------------------------------------------

    def hold(
        self, message_id: str, pending: Pending, outcome: Outcome, writer: OutcomeWriter
    ) -> None:
        """Hold this thread's next acknowledgement of ``message_id`` until ``pending`` is
        committed; ``writer`` writes the outcome again if its batch failed."""
        earlier: _Held | None = getattr(self._local, "held", None)
        if earlier is not None:
            # Its message was never acknowledged: Dramatiq delivers it again once this
            # worker stops, and the claim finds its fire decided.
            logger.warning("message %s was not acknowledged", earlier.message_id)
        self._local.held = _Held(message_id, pending, outcome, writer)

    def release(self, command: str, consumer: Any, message: MessageProxy) -> bool:
        """Hand the held acknowledgement of ``message`` over to the sending thread; False
        when nothing is held for it (Dramatiq acknowledges it itself, at once)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.message_id != message.message_id:
            return False
        self._local.held = None
        ack = _Ack(command, consumer.queue_name, message.options["redis_message_id"], held)
        if self._broker is None:
            # No broker to send with (never so in a worker): wait for the commit here,
            # then Dramatiq acknowledges it as it would without us.
            _settle([ack], lambda _: None)
            return False
        # Off the consumer's count now, as Dramatiq's own ack does, though Redis still
        # holds it: counted until sent, held messages would stop the prefetch, and the
        # consumer backs off when it fetches nothing. Few are held at a time: a thread's
        # outcome is committed with its next claim, before its next message runs.
        consumer.queued_message_ids.discard(message.message_id)
        self._queue_ack(ack)
        return True

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until every acknowledgement handed over is sent; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._unsent:
                left = deadline - time.monotonic()
                if left <= 0:
                    if not self._warned:  # each worker thread flushes on its way out
                        self._warned = True
                        logger.warning(
                            "%d messages not acknowledged at shutdown: Dramatiq will "
                            "deliver them again, and their fires' recorded outcomes skip "
                            "them",
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

    def _queue_ack(self, ack: _Ack) -> None:
        with self._wake:
            self._queue.append(ack)
            self._unsent += 1
            self._wake.notify()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cronwork-acks", daemon=True)
                self._thread.start()

    def _hand_back(self, ack: _Ack) -> None:
        """The background writer wrote the outcome at last: acknowledge its message now."""
        ack.settled = True
        self._queue_ack(ack)

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
            try:
                self._send(_settle(acks, self._hand_back))
            except Exception:
                # Not acknowledged: Dramatiq delivers them again once this worker stops,
                # and the claims find their fires decided. The thread goes on.
                logger.exception("could not acknowledge %d messages", len(acks))
            finally:
                with self._wake:
                    self._unsent -= len(acks)
                    self._wake.notify_all()

    def _send(self, acks: list[_Ack]) -> None:
        """Send the acknowledgements, retried while Redis cannot be reached (as Dramatiq
        retries its own); each one is harmless sent twice."""
        delay = RETRY_FIRST_SECONDS
        while acks:
            try:
                self._send_once(acks)
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                logger.warning(
                    "could not acknowledge %d messages, retrying in %.1fs: %s",
                    len(acks),
                    delay,
                    redact(str(exc)),
                )
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _send_once(self, acks: list[_Ack]) -> None:
        """The acks of each queue in one call of ``ACK_MANY``; the nacks (a message that
        failed for good), and any ack it did not find, each with Dramatiq's own call."""
        broker = self._broker
        assert broker is not None
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
                keys=[broker.namespace], args=[current_millis(), queue, broker.broker_id, *ids]
            )
            one_by_one += [("ack", queue, _text(m)) for m in missed]
        for command, queue, redis_id in one_by_one:
            getattr(broker, f"do_{command}")(queue, redis_id)  # do_ack, do_nack


def _settle(acks: list[_Ack], hand_back: Callable[[_Ack], None]) -> list[_Ack]:
    """The acknowledgements whose outcomes are committed, after waiting for each.

    An outcome whose batch failed is written again (services/worker/outcomes.py): the
    first one retried for a while, the rest, the database being away, tried once. One
    that still did not land goes to the background writer, and its acknowledgement with
    it: ``hand_back`` gets it once the outcome is written.
    """
    ready: list[_Ack] = []
    retried = False
    for ack in acks:
        held = ack.held
        if not ack.settled:
            try:
                held.pending.wait()
            except BaseException:  # the writer thread's error, raised again here
                landed = held.writer.record(
                    held.outcome, inline=not retried, then=functools.partial(hand_back, ack)
                )
                retried = True
                if not landed:
                    continue
        ready.append(ack)
    return ready


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
        # Dramatiq's worker process closes the pipe its stderr is right after this: the
        # last lines the worker's log handler keeps must be written now.
        flush_logs()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        return _HeldAckConsumer(super().consume(queue_name, prefetch, timeout), self.held_acks)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
