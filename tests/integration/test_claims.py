"""Record before run, exclusive claims, outcomes that land: the worker under faults.

The worker reaches Postgres through a TCP proxy the test cuts and restores (tests/proxy.py),
so a database outage is real for it while the shared server stays up. Every test here
failed on 0.1.0, where tracking "ran the job anyway" when its start could not be recorded.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from services.settings import Settings
from services.store.engines import make_engine
from tests.conftest import REDIS_SERVER
from tests.integration.conftest import attempt_rows, fire_rows, spec
from tests.integration.worker_harness import (  # noqa: F401 (fixtures)
    Harness,
    harness_factory_fixture,
    harness_fixture,
)
from tests.proxy import TcpProxy
from tests.waiting import wait_for


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 5432)
    yield proxy
    proxy.close()


@pytest.fixture
def cut_harness(
    engine: Engine, pg_url: str, settings: Settings, pg_proxy: TcpProxy
) -> Iterator[Harness]:
    """A worker whose database connections go through ``pg_proxy``."""
    proxied = pg_proxy.url_for(pg_url, 5432)
    h = Harness(engine, settings, lambda: make_engine(proxied, pre_ping=False))
    yield h
    h.close()


def delayed_copies(client: redis.Redis, settings: Settings, message_id: str) -> list[Any]:
    """The copies of a message waiting in the delay queue, decoded."""
    raw = client.hvals(f"{settings.redis_prefix}-dramatiq:default.DQ.msgs")
    found = [json.loads(v) for v in raw]
    return [m for m in found if m["message_id"] == message_id]


def test_an_attempt_whose_start_cannot_be_recorded_does_not_run(
    cut_harness: Harness,
    pg_proxy: TcpProxy,
    redis_client: redis.Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = cut_harness
    calls: list[datetime] = []

    @h.actor("record_first")
    def record_first() -> str:
        calls.append(datetime.now(UTC))
        return "ran"

    caplog.set_level(logging.INFO, logger="cronwork.outages")
    fire = h.fire(spec("rbr", "record_first", max_retries=0))
    with pg_proxy.outage():
        h.start()

        def put_back_twice() -> bool:
            copies = delayed_copies(redis_client, settings, fire.message_id)
            return any(c["options"]["cronwork"].get("requeues", 0) >= 2 for c in copies)

        wait_for(put_back_twice, timeout=15, what="the message to go back to the broker twice")
        # Not run, not counted as a retry, and no attempt row (there is no database).
        assert calls == []
        [copy] = delayed_copies(redis_client, settings, fire.message_id)
        assert copy["options"].get("retries", 0) == 0
        downs = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(downs) == 1, [r.getMessage() for r in downs]  # one line per outage
    assert attempt_rows(h.engine, fire.message_id) == []

    # The database is back: the next delivery claims, runs once, and is recorded.
    row = h.wait_fire(fire, timeout=40)
    assert row.status == "succeeded" and len(calls) == 1
    [att] = attempt_rows(h.engine, fire.message_id)
    assert (att.attempt, att.status, att.result) == (0, "succeeded", "ran")
    assert att.started_at <= calls[0]
    wait_for(
        lambda: any("is back" in r.getMessage() for r in caplog.records),
        what="the outage's end to be logged",
    )


def test_an_outcome_that_cannot_be_recorded_is_retried_until_it_lands(
    cut_harness: Harness, pg_proxy: TcpProxy, redis_client: redis.Redis, settings: Settings
) -> None:
    h = cut_harness
    release = threading.Event()

    @h.actor("slow_ok")
    def slow_ok() -> str:
        release.wait(20)
        return "done"

    h.start()
    fire = h.fire(spec("late-write", "slow_ok"))
    wait_for(
        lambda: [a for a in attempt_rows(h.engine, fire.message_id) if a.status == "running"],
        what="the attempt to start",
    )
    pg_proxy.cut()
    release.set()
    time.sleep(1.0)  # the body is done; its outcome cannot be written
    [att] = attempt_rows(h.engine, fire.message_id)
    assert att.status == "running"
    # Not acknowledged before its outcome is durable: the broker still holds the message.
    assert redis_client.hlen(f"{settings.redis_prefix}-dramatiq:default.msgs") == 1
    restored = datetime.now(UTC)
    pg_proxy.restore()
    row = h.wait_fire(fire, timeout=30)
    assert row.status == "succeeded"
    [att] = attempt_rows(h.engine, fire.message_id)
    assert (att.status, att.result) == ("succeeded", "done")
    # Recorded as it happened (when the body ended), not when the write finally landed.
    assert att.finished_at < restored and att.duration_ms < 1000
    wait_for(
        lambda: redis_client.hlen(f"{settings.redis_prefix}-dramatiq:default.msgs") == 0,
        what="the message to be acknowledged once its outcome landed",
    )


def test_two_deliveries_of_one_attempt_never_both_run(harness: Harness) -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    @harness.actor("exclusive")
    def exclusive() -> None:
        calls.append(1)
        started.set()
        release.wait(20)

    harness.start()
    fire = harness.fire(spec("exclusive", "exclusive"))
    assert started.wait(15)
    # The same message again (a re-send after a crash, a broker redelivery).
    assert harness.dispatcher.send([fire]) == 1

    def skipped() -> list[Any]:
        return [a for a in attempt_rows(harness.engine, fire.message_id) if a.status == "skipped"]

    [skip] = wait_for(skipped, what="the duplicate to be recorded as skipped")
    assert skip.attempt == 0
    assert skip.error_message == "duplicate delivery: attempt 0 is running on worker-1"
    release.set()
    assert harness.wait_fire(fire).status == "succeeded"
    assert calls == [1]
    statuses = sorted((a.attempt, a.status) for a in attempt_rows(harness.engine, fire.message_id))
    assert statuses == [(0, "skipped"), (0, "succeeded")]


def test_a_message_sent_but_not_marked_enqueued_runs_once(
    engine: Engine, harness_factory: Callable[..., Harness], pg_url: str, pg_proxy: TcpProxy
) -> None:
    """Postgres goes away right after a send: the fire stays pending and the leader sends
    the same message id again. 0.1.0 ran that second delivery too."""
    h = harness_factory()
    calls: list[int] = []

    @h.actor("sent_once")
    def sent_once() -> None:
        calls.append(1)

    s = spec("sent-once", "sent_once")
    fire = h.claim(s)
    # The scheduler's fence reaches the database through the proxy, cut after the send.
    h.fence.engine = make_engine(pg_proxy.url_for(pg_url, 5432))
    pg_proxy.cut()
    assert h.dispatcher.send([fire]) == 1  # in Redis; mark_enqueued failed (logged)
    pg_proxy.restore()
    [row] = [r for r in fire_rows(engine) if r.id == fire.id]
    assert row.status == "pending"
    h.start()
    assert h.wait_fire(fire).status == "succeeded"
    h.fence.engine = engine
    assert h.dispatcher.resend_pending(0.0) == 0  # the claim moved it on: nothing pending
    # Even a re-send that raced the claim runs nothing: it is a duplicate of attempt 0.
    assert h.dispatcher.send([fire]) == 1
    wait_for(lambda: len(attempt_rows(engine, fire.message_id)) == 2, what="the duplicate's row")
    h.drain()
    assert calls == [1]
    assert sorted(a.status for a in attempt_rows(engine, fire.message_id)) == [
        "skipped",
        "succeeded",
    ]


def test_redis_heartbeat_key_is_what_liveness_reads(settings: Settings) -> None:
    """Guards the test above it: the worker under test really beats into Redis."""
    from services.liveness import RedisBeacon, RedisLiveness

    client = redis.Redis.from_url(REDIS_SERVER)
    beacon = RedisBeacon(client, settings.redis_prefix, "beating", ttl=2.0)
    liveness = RedisLiveness(client, settings.redis_prefix, lost_after=2.0)
    assert liveness.alive(["beating"]) == {"beating": False}
    beacon.beat()
    assert liveness.alive(["beating"]) == {"beating": True}
    beacon.stop()
    assert liveness.alive(["beating"]) == {"beating": False}
