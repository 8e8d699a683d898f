"""``enqueue_many`` (services/scheduler/sending.py) leaves in Redis what as many
``RedisBroker.enqueue`` calls would: a worker runs every message once, delayed ones too."""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from services.scheduler.sending import enqueue_many
from tests.conftest import REDIS_SERVER
from tests.integration.conftest import fire_rows, spec
from tests.integration.worker_harness import (  # noqa: F401 (fixtures)
    Harness,
    harness_factory_fixture,
    harness_fixture,
)


def test_pipelined_messages_are_stored_like_single_enqueues(redis_prefix: str) -> None:
    broker = RedisBroker(url=REDIS_SERVER, namespace=f"{redis_prefix}-one")
    broker.declare_queue("default")

    def message(i: int) -> dramatiq.Message[Any]:
        return dramatiq.Message(
            queue_name="default", actor_name="a", args=(i,), kwargs={}, options={}
        )

    copies, error = enqueue_many(broker, [(message(1), None), (message(2), 60_000)])
    assert error is None
    single = broker.enqueue(message(3))
    client = redis.Redis.from_url(REDIS_SERVER)
    ns = f"{redis_prefix}-one"
    assert copies[0].queue_name == "default" and copies[1].queue_name == "default.DQ"
    assert "eta" in copies[1].options and "eta" not in copies[0].options
    # Same keys as the broker's own enqueue: the queue list and hash, the delay queue's.
    assert client.llen(f"{ns}:default") == 2
    assert client.hlen(f"{ns}:default.msgs") == 2
    assert client.hexists(f"{ns}:default.msgs", single.options["redis_message_id"])
    assert client.hexists(f"{ns}:default.msgs", copies[0].options["redis_message_id"])
    assert client.hexists(f"{ns}:default.DQ.msgs", copies[1].options["redis_message_id"])
    broker.close()
    client.close()


def test_a_worker_runs_each_pipelined_fire_once(harness: Harness) -> None:
    ran: list[int] = []
    harness.actor("tick_actor")(lambda: ran.append(1))
    harness.start()
    s = spec()
    fires = [harness.claim(s) for _ in range(30)]
    assert harness.dispatcher.send(fires) == 30
    for fire in fires:
        harness.wait_fire(fire)
    assert len(ran) == 30
    assert {r.status for r in fire_rows(harness.engine)} == {"succeeded"}
