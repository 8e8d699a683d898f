"""The fence and the dispatcher against real Postgres and Redis.

docs/design.md: the fence, and sending.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import redis
from sqlalchemy import Engine, update

from services.broker import sender_broker
from services.scheduler.dispatch import Dispatcher
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, Fire, request
from services.store.tables import fires
from services.timeutil import utcnow
from tests.integration.conftest import DEAD_REDIS, fire_rows, make_settings, spec

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def times(n: int, start: datetime = T0) -> list[datetime]:
    return [start + timedelta(seconds=i) for i in range(n)]


def statuses(engine: Engine) -> dict[datetime, str]:
    return {r.scheduled_for: r.status for r in fire_rows(engine)}


# -- claim ---------------------------------------------------------------------------


def test_claim_inserts_pending_rows_and_returns_the_won_ones(engine: Engine) -> None:
    fence = Fence(engine, "a")
    s = spec()
    won = fence.claim([request(s, t, "scheduled") for t in times(3)])

    assert [f.scheduled_for for f in won] == times(3)
    assert all(isinstance(f, Fire) and f.scheduled_for.tzinfo is not None for f in won)
    rows = fire_rows(engine)
    assert [(r.schedule, r.scheduled_for, r.status, r.fired_by) for r in rows] == [
        ("tick", t, "pending", "a") for t in times(3)
    ]
    assert {f.message_id for f in won} == {r.message_id for r in rows}
    assert len({f.message_id for f in won}) == 3
    assert won[0].message["actor_name"] == "tick_actor"
    assert won[0].message["options"]["cronwork"]["scheduled_for"] == "2026-01-05T08:00:00Z"


def test_second_claim_of_the_same_time_wins_nothing(engine: Engine) -> None:
    s = spec()
    first = Fence(engine, "a").claim([request(s, T0, "scheduled")])
    assert len(first) == 1
    assert Fence(engine, "b").claim([request(s, T0, "scheduled")]) == []
    # A batch with one old and one new time wins only the new one.
    again = Fence(engine, "b").claim([request(s, t, "scheduled") for t in times(2)])
    assert [f.scheduled_for for f in again] == [T0 + timedelta(seconds=1)]
    rows = fire_rows(engine)
    assert len(rows) == 2
    assert rows[0].fired_by == "a"
    assert rows[0].message_id == first[0].message_id


def test_the_same_time_of_another_schedule_is_another_fire(engine: Engine) -> None:
    fence = Fence(engine, "a")
    assert len(fence.claim([request(spec("one"), T0, "scheduled")])) == 1
    assert len(fence.claim([request(spec("two"), T0, "scheduled")])) == 1


def test_skipped_and_missed_rows_are_written_but_not_won(engine: Engine) -> None:
    s = spec()
    t1, t2, t3 = times(3)
    won = Fence(engine, "a").claim(
        [
            request(s, t3, "scheduled"),
            request(s, t1, "scheduled", "missed"),
            request(s, t2, "catchup", "skipped"),
        ]
    )
    assert [f.scheduled_for for f in won] == [t3]
    rows = {r.scheduled_for: r for r in fire_rows(engine)}
    assert rows[t1].status == "missed"
    assert rows[t1].finished_at is not None
    assert rows[t2].status == "skipped"
    assert rows[t3].status == "pending"
    assert rows[t3].finished_at is None


def _race(engines: list[Engine], n: int, batch: int) -> Counter[datetime]:
    """Every engine claims the same ``n`` times in batches of ``batch``, all at once."""
    s = spec()
    all_times = times(n)
    won: Counter[datetime] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def run(engine: Engine, seed: int) -> None:
        fence = Fence(engine, f"claimer-{seed}")
        order = list(all_times)
        random.Random(seed).shuffle(order)
        chunks = [order[i : i + batch] for i in range(0, n, batch)]
        barrier.wait()
        try:
            for chunk in chunks:
                got = fence.claim([request(s, t, "scheduled") for t in chunk])
                with lock:
                    won.update(f.scheduled_for for f in got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e, i)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return won


def test_concurrent_claims_win_each_time_exactly_once(pg_url: str) -> None:
    engines = [make_engine(pg_url) for _ in range(4)]
    try:
        won = _race(engines, 200, batch=1)
    finally:
        for e in engines:
            e.dispose()
    assert len(won) == 200
    assert set(won.values()) == {1}


def test_concurrent_batch_claims_in_different_orders_do_not_deadlock(pg_url: str) -> None:
    engines = [make_engine(pg_url) for _ in range(4)]
    try:
        won = _race(engines, 200, batch=50)
    finally:
        for e in engines:
            e.dispose()
    assert len(won) == 200
    assert set(won.values()) == {1}


# -- mark_enqueued / pending ---------------------------------------------------------


def test_mark_enqueued_moves_only_pending_rows(engine: Engine) -> None:
    fence = Fence(engine, "a")
    won = fence.claim([request(spec(), t, "scheduled") for t in times(3)])
    with engine.begin() as conn:
        conn.execute(update(fires).where(fires.c.id == won[1].id).values(status="running"))
    fence.mark_enqueued([f.id for f in won])
    st = statuses(engine)
    assert [st[t] for t in times(3)] == ["enqueued", "running", "enqueued"]
    rows = {r.id: r for r in fire_rows(engine)}
    assert rows[won[0].id].enqueued_at is not None
    assert rows[won[1].id].enqueued_at is None
    fence.mark_enqueued([])  # a no-op, not an error


def test_pending_finds_rows_left_pending(engine: Engine) -> None:
    fence = Fence(engine, "a")
    won = fence.claim([request(spec(), t, "scheduled") for t in times(3)])
    assert fence.pending(older_than=60) == []  # too young to count as left behind
    fence.mark_enqueued([won[0].id])
    left = fence.pending(older_than=60, now=utcnow() + timedelta(seconds=61))
    assert [f.id for f in left] == [won[1].id, won[2].id]
    assert left[0].message_id == won[1].message_id
    assert left[0].message == won[1].message
    assert left[0].scheduled_for == won[1].scheduled_for


# -- dispatch --------------------------------------------------------------------------


def _queued(client: redis.Redis, settings: Settings, queue: str = "default") -> list[Any]:
    """The messages waiting in the Redis broker's queue, decoded.

    RedisBroker keys each enqueue by a fresh ``redis_message_id``; the Dramatiq
    ``message_id`` (the fire's) is inside the stored body.
    """
    base = f"{settings.redis_prefix}-dramatiq:{queue}"
    keys = client.lrange(base, 0, -1)
    bodies = [client.hget(f"{base}.msgs", key) for key in keys]
    return [dramatiq.Message.decode(body) for body in bodies if isinstance(body, bytes)]


def _queued_ids(client: redis.Redis, settings: Settings, queue: str = "default") -> list[str]:
    return [m.message_id for m in _queued(client, settings, queue)]


def test_send_enqueues_with_the_fire_message_id_and_marks_enqueued(
    engine: Engine, settings: Settings, send_broker: dramatiq.Broker, redis_client: redis.Redis
) -> None:
    fence = Fence(engine, "a")
    won = fence.claim([request(spec(), t, "scheduled") for t in times(3)])
    assert Dispatcher(send_broker, fence).send(won) == 3

    assert set(_queued_ids(redis_client, settings)) == {f.message_id for f in won}
    assert set(statuses(engine).values()) == {"enqueued"}
    # The message body is exactly the fire's message.
    msg = next(m for m in _queued(redis_client, settings) if m.message_id == won[0].message_id)
    assert msg.actor_name == "tick_actor"
    assert msg.options["cronwork"]["schedule"] == "tick"
    assert msg.options["max_retries"] == 0


def test_send_with_redis_down_leaves_rows_pending_then_resend_sends_them(
    engine: Engine,
    settings: Settings,
    send_broker: dramatiq.Broker,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    fence = Fence(engine, "a")
    won = fence.claim([request(spec(), t, "scheduled") for t in times(3)])
    dead = sender_broker(make_settings(redis_prefix, redis_url=DEAD_REDIS))
    try:
        started = time.monotonic()
        assert Dispatcher(dead, fence).send(won) == 0  # logged, not raised
        assert time.monotonic() - started < 10
    finally:
        dead.close()
    assert set(statuses(engine).values()) == {"pending"}
    assert _queued_ids(redis_client, settings) == []

    good = Dispatcher(send_broker, fence)
    assert good.resend_pending(older_than=60) == 0  # too young: a send may be under way
    assert good.resend_pending(older_than=60, now=utcnow() + timedelta(seconds=61)) == 3
    assert set(statuses(engine).values()) == {"enqueued"}
    assert sorted(_queued_ids(redis_client, settings)) == sorted(f.message_id for f in won)
    # Nothing is left to re-send.
    assert good.resend_pending(older_than=0.0) == 0


def test_send_marks_what_reached_the_broker_before_a_failure(
    engine: Engine, send_broker: dramatiq.Broker
) -> None:
    fence = Fence(engine, "a")
    won = fence.claim([request(spec(), t, "scheduled") for t in times(3)])

    class FlakyBroker:
        """Passes two messages through, then fails like a dropped connection."""

        def __init__(self) -> None:
            self.calls = 0

        def get_declared_queues(self) -> set[str]:
            return send_broker.get_declared_queues()

        def declare_queue(self, name: str) -> None:
            send_broker.declare_queue(name)

        def enqueue(self, message: dramatiq.Message[object], *, delay: int | None = None) -> None:
            self.calls += 1
            if self.calls > 2:
                raise redis.ConnectionError("connection reset")
            send_broker.enqueue(message, delay=delay)

    assert Dispatcher(FlakyBroker(), fence).send(won) == 2  # type: ignore[arg-type]
    st = statuses(engine)
    assert [st[f.scheduled_for] for f in won] == ["enqueued", "enqueued", "pending"]
