"""A tracked message is acknowledged only once its outcome is committed, though its worker
thread no longer waits for either (services/worker/acks.py).

Each test holds a row lock on the fire from inside the job's body, so the outcome's batch
waits on Postgres while the test looks at Redis; then lets it go, breaks the write, stops
the worker or cuts Redis, and checks the message is acknowledged exactly when its
outcome is on record, and the body ran once.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from sqlalchemy import Connection, Engine, text

from services.broker import dramatiq_namespace
from services.context import current_fire
from services.logs import CoalescingStreamHandler
from services.settings import Settings
from services.store.engines import make_engine
from services.store.schedule_rows import sync_schedule_rows
from services.worker.acks import HeldAcks
from services.worker.tracking import Tracking
from tests.conftest import REDIS_SERVER
from tests.integration.conftest import attempt_rows, make_settings, msgs_left, spec
from tests.integration.worker_harness import (  # noqa: F401 (fixtures)
    Harness,
    harness_factory_fixture,
    harness_fixture,
)
from tests.proxy import TcpProxy
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


class FireLock:
    """The job's body locks its own fire row and returns; the outcome's batch then waits
    on Postgres until ``release``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.runs = 0
        self._conn: Connection | None = None

    def body(self) -> None:
        self.runs += 1
        conn = self.engine.connect()
        conn.begin()
        conn.execute(text("SELECT id FROM cronwork_fires WHERE schedule = 'held' FOR UPDATE"))
        self._conn = conn

    def wait_blocked(self) -> int:
        """The pid of the writer's connection once its batch waits on the lock."""

        def blocked() -> int | None:
            with self.engine.connect() as conn:
                pid = conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE 'EXECUTE cronwork_batch%'"
                    )
                ).scalar()
            return None if pid is None else int(pid)

        return int(wait_for(blocked, timeout=15, what="the outcome's batch to wait on the lock"))

    def release(self) -> None:
        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
            self._conn = None


@pytest.fixture(name="fire_lock")
def fire_lock_fixture(engine: Engine) -> Iterator[FireLock]:
    lock = FireLock(engine)
    yield lock
    lock.release()


def _held_job(h: Harness, lock: FireLock) -> Any:
    h.actor("held_actor", max_retries=0)(lock.body)
    h.start()
    return h.fire(spec("held", actor="held_actor"))


def _outcome(engine: Engine, message_id: str) -> str:
    [row] = attempt_rows(engine, message_id)
    return str(row.status)


def test_a_message_is_acknowledged_once_its_outcome_is_committed(
    harness: Harness, engine: Engine, fire_lock: FireLock, redis_client: redis.Redis
) -> None:
    fire = _held_job(harness, fire_lock)
    fire_lock.wait_blocked()
    # The body returned; its outcome waits on Postgres, and its acknowledgement with it.
    assert _outcome(engine, fire.message_id) == "running"
    assert msgs_left(redis_client, harness.settings) == 1

    fire_lock.release()
    harness.wait_fire(fire)
    wait_for(lambda: msgs_left(redis_client, harness.settings) == 0, timeout=10, what="the ack")
    assert _outcome(engine, fire.message_id) == "succeeded"
    assert fire_lock.runs == 1


def test_an_outcome_whose_batch_failed_is_written_again_before_the_ack(
    harness: Harness, engine: Engine, fire_lock: FireLock, redis_client: redis.Redis
) -> None:
    fire = _held_job(harness, fire_lock)
    writer = fire_lock.wait_blocked()
    with engine.connect() as conn:  # the batch fails: its connection is gone
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": writer})
    # Written again on a new connection, which waits on the same lock.
    wait_for(lambda: fire_lock.wait_blocked() != writer, timeout=15, what="a second write")
    assert msgs_left(redis_client, harness.settings) == 1

    fire_lock.release()
    wait_for(lambda: msgs_left(redis_client, harness.settings) == 0, timeout=15, what="the ack")
    assert _outcome(engine, fire.message_id) == "succeeded"
    assert harness.wait_fire(fire).status == "succeeded"
    assert fire_lock.runs == 1


def test_a_stopping_worker_sends_its_held_acknowledgements_before_it_stops(
    harness: Harness, engine: Engine, fire_lock: FireLock, redis_client: redis.Redis
) -> None:
    fire = _held_job(harness, fire_lock)
    fire_lock.wait_blocked()
    threading.Timer(1.0, fire_lock.release).start()
    assert harness.worker is not None
    harness.worker.stop(timeout=30_000)
    # Stopped: so the outcome is on record and the message acknowledged, though both
    # waited for the lock to go a second after the stop began.
    assert _outcome(engine, fire.message_id) == "succeeded"
    assert msgs_left(redis_client, harness.settings) == 0
    harness.worker = None


def test_acknowledgements_wait_out_a_redis_outage(
    engine: Engine,
    pg_url: str,
    redis_prefix: str,
    fire_lock: FireLock,
    caplog: Any,
    redis_client: redis.Redis,
) -> None:
    proxy = TcpProxy("127.0.0.1", 6379)
    settings = make_settings(redis_prefix, redis_url=proxy.url_for(REDIS_SERVER, 6379))
    harness = Harness(engine, settings, lambda: make_engine(pg_url))
    try:
        fire = _held_job(harness, fire_lock)
        fire_lock.wait_blocked()
        with caplog.at_level(logging.WARNING, logger="services.worker.acks"):
            proxy.cut()
            fire_lock.release()  # the outcome commits; Redis is away for its ack
            wait_for(
                lambda: any("could not acknowledge" in r.message for r in caplog.records),
                timeout=15,
                what="a failed acknowledgement",
            )
            assert _outcome(engine, fire.message_id) == "succeeded"
            assert msgs_left(redis_client, settings) == 1
            proxy.restore()
            wait_for(lambda: msgs_left(redis_client, settings) == 0, timeout=20, what="the ack")
        assert fire_lock.runs == 1
    finally:
        proxy.restore()
        harness.close()
        proxy.close()


def test_acknowledgements_survive_a_redis_that_forgot_its_scripts(
    harness: Harness, engine: Engine, redis_client: redis.Redis
) -> None:
    runs: list[float] = []

    def body() -> None:
        runs.append(time.monotonic())
        # As a restarted Redis would: Dramatiq's script is gone before the ack is sent.
        redis_client.script_flush()

    harness.actor("forgetful_actor", max_retries=0)(body)
    harness.start()
    fire = harness.fire(spec("forgetful", actor="forgetful_actor"))
    harness.wait_fire(fire)
    wait_for(lambda: msgs_left(redis_client, harness.settings) == 0, timeout=10, what="the ack")
    assert _outcome(engine, fire.message_id) == "succeeded"
    assert len(runs) == 1


def test_a_job_that_failed_for_good_is_dead_lettered_once_recorded(
    harness: Harness, engine: Engine, redis_client: redis.Redis
) -> None:
    def body() -> None:
        raise RuntimeError("boom")

    harness.actor("failing_actor", max_retries=0)(body)
    harness.start()
    fire = harness.fire(spec("failing", actor="failing_actor"))
    assert harness.wait_fire(fire).status == "failed"
    namespace = dramatiq_namespace(harness.settings)
    # Dramatiq's nack: out of the queue's messages, into its dead-letter set.
    wait_for(
        lambda: redis_client.zcard(f"{namespace}:default.XQ") == 1,
        timeout=10,
        what="the dead-lettered message",
    )
    assert msgs_left(redis_client, harness.settings) == 0


def test_many_acknowledgements_in_one_call_find_dramatiqs_messages(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """ACK_MANY finds messages where this Dramatiq keeps them (else every ack would take
    the slower path through Dramatiq's own script), and returns those it did not find."""
    from dramatiq.brokers.redis import RedisBroker

    from services.worker.acks import ACK_MANY

    namespace = dramatiq_namespace(settings)
    broker = RedisBroker(url=REDIS_SERVER, namespace=namespace)
    try:
        actor = dramatiq.actor(actor_name="plain", broker=broker)(lambda: None)
        for _ in range(3):
            actor.send()
        consumer = broker.consume("default", prefetch=3, timeout=100)
        fetched = [next(consumer) for _ in range(3)]
        ids = [m.options["redis_message_id"] for m in fetched if m is not None]
        assert len(ids) == 3 and msgs_left(redis_client, settings) == 3
        ack_many = broker.client.register_script(ACK_MANY)
        missed = ack_many(keys=[namespace], args=[0, "default", broker.broker_id, *ids, "nope"])
        assert [m.decode() for m in missed] == ["nope"]
        assert msgs_left(redis_client, settings) == 0
        assert redis_client.scard(f"{namespace}:__acks__.{broker.broker_id}.default") == 0
    finally:
        broker.close()


def test_a_failed_job_is_dead_lettered_only_once_its_outcome_is_committed(
    harness: Harness, engine: Engine, fire_lock: FireLock, redis_client: redis.Redis
) -> None:
    def body() -> None:
        fire_lock.body()
        raise RuntimeError("boom")

    harness.actor("held_actor", max_retries=0)(body)
    harness.start()
    fire = harness.fire(spec("held", actor="held_actor"))
    fire_lock.wait_blocked()
    dead_letters = f"{dramatiq_namespace(harness.settings)}:default.XQ"
    assert redis_client.zcard(dead_letters) == 0 and msgs_left(redis_client, harness.settings) == 1
    fire_lock.release()
    wait_for(lambda: redis_client.zcard(dead_letters) == 1, timeout=10, what="the nack")
    assert _outcome(engine, fire.message_id) == "failed"


def test_more_messages_than_the_prefetch_all_run(
    harness: Harness, engine: Engine, redis_client: redis.Redis
) -> None:
    """A held message is off the consumer's count: counted until its ack is sent, held
    messages would stop the prefetch (4 here) and the queue would stall."""
    harness.actor("quick_actor", max_retries=0)(lambda: None)
    harness.start()
    fires = [harness.fire(spec("quick", actor="quick_actor")) for _ in range(12)]
    assert {harness.wait_fire(f).status for f in fires} == {"succeeded"}
    wait_for(lambda: msgs_left(redis_client, harness.settings) == 0, timeout=10, what="the acks")


def test_the_next_fire_of_an_overlap_skip_schedule_waits_for_the_outcome_before_it(
    harness: Harness, engine: Engine
) -> None:
    """Under ``overlap: skip`` a claim reads the schedule's other fires outside the batch:
    the outcome before it must be committed first, or the next fire on the same thread
    finds its predecessor still running and is skipped. The first body locks its own
    fire, so its outcome waits on Postgres while the second fire is next in line."""
    held: list[Connection] = []

    def body() -> None:
        fire = current_fire()
        if held or fire is None:
            return
        conn = engine.connect()
        conn.begin()
        conn.execute(
            text("SELECT id FROM cronwork_fires WHERE id = :id FOR UPDATE"), {"id": fire.fire_id}
        )
        held.append(conn)

    harness.actor("quick_actor", max_retries=0)(body)
    s = spec("seq", actor="quick_actor", overlap="skip")
    sync_schedule_rows(harness.engine, {s.name: s})
    fires = [harness.fire(s) for _ in range(2)]  # queued before the worker starts
    harness.broker.emit_after("process_boot")
    harness.worker = dramatiq.Worker(harness.broker, worker_threads=1, worker_timeout=100)
    harness.worker.start()
    FireLock(engine).wait_blocked()
    held[0].rollback()
    held[0].close()
    assert [harness.wait_fire(f).status for f in fires] == ["succeeded", "succeeded"]


def test_an_outcome_written_in_the_background_is_acknowledged_after_it(
    engine: Engine, pg_url: str, settings: Settings, redis_client: redis.Redis
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    harness = Harness(engine, settings, lambda: make_engine(proxy.url_for(pg_url, 5432)))
    try:
        harness.actor("cut_actor", max_retries=0)(proxy.cut)  # Postgres goes away mid-job
        tracking = next(m for m in harness.broker.middleware if isinstance(m, Tracking))
        tracking.writer.inline_seconds = 0.3
        harness.start()
        fire = harness.fire(spec("cut", actor="cut_actor"))
        wait_for(lambda: tracking.writer.pending == 1, timeout=15, what="the background")
        assert msgs_left(redis_client, settings) == 1
        proxy.restore()
        wait_for(lambda: msgs_left(redis_client, settings) == 0, timeout=30, what="the ack")
        assert _outcome(engine, fire.message_id) == "succeeded"
    finally:
        proxy.restore()
        harness.close()
        proxy.close()


def test_the_sending_thread_survives_an_unexpected_error(
    harness: Harness,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
    redis_client: redis.Redis,
) -> None:
    send_once = HeldAcks._send_once
    sent: list[int] = []

    def first_one_fails(self: HeldAcks, acks: list[Any]) -> None:
        sent.append(len(acks))
        if len(sent) == 1:
            raise RuntimeError("a bug")
        send_once(self, acks)

    monkeypatch.setattr(HeldAcks, "_send_once", first_one_fails)
    harness.actor("quick_actor", max_retries=0)(lambda: None)
    harness.start()
    first = harness.fire(spec("quick", actor="quick_actor"))
    harness.wait_fire(first)
    wait_for(lambda: sent, timeout=10, what="the first send")
    acks = harness.broker.held_acks  # type: ignore[attr-defined]
    assert acks.flush(timeout=10)  # nothing left counted as unsent
    # Its message is left for Dramatiq to deliver again once this worker stops.
    assert msgs_left(redis_client, harness.settings) == 1
    assert "could not acknowledge 1 messages" in caplog.text
    second = harness.fire(spec("quick", actor="quick_actor"))
    assert harness.wait_fire(second).status == "succeeded"
    wait_for(lambda: len(sent) == 2 and acks.flush(timeout=1), timeout=10, what="a send")
    assert msgs_left(redis_client, harness.settings) == 1


def test_closing_the_worker_broker_writes_the_log_lines_kept(harness: Harness) -> None:
    """Dramatiq's worker process closes the pipe its stderr is right after the broker:
    lines the worker's handler keeps must be written by then."""
    stream = io.StringIO()
    handler = CoalescingStreamHandler(stream, interval=60.0)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        log = logging.getLogger("cronwork-test-close")
        log.setLevel(logging.INFO)
        log.info("first")
        log.info("kept")
        assert stream.getvalue() == "first\n"
        harness.close()
        assert stream.getvalue() == "first\nkept\n"
    finally:
        root.removeHandler(handler)
