"""The worker's Dramatiq broker: Dramatiq's middleware plus tracking, heartbeats and
message references, each built lazily in the worker process that uses it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import dramatiq
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Middleware
from sqlalchemy import Engine

from services.broker import SEND_TIMEOUT_SECONDS, dramatiq_namespace, standard_middleware
from services.liveness import DatabaseLiveness, Liveness, RedisBeacon, RedisLiveness
from services.message_refs import RecordRefs
from services.settings import Settings
from services.worker.acks import HeldAckBroker, HeldAcks
from services.worker.heartbeat import WorkerHeartbeat
from services.worker.tracking import Tracking


def worker_broker(
    settings: Settings,
    *,
    engine_factory: Callable[[], Engine],
    instance_id: str | None = None,
    heartbeat_file: Path | None = None,
) -> dramatiq.Broker:
    """A broker that runs jobs: every attempt tracked, the worker heartbeating.

    Tracking comes first so that its after-hook runs last, after Retries decided whether
    the attempt will be retried; AgeLimit comes before it, so a message too old to run is
    dropped before anything is claimed. Consumers keep Dramatiq's socket defaults (they
    wait on Redis on purpose).
    """
    iid = instance_id or settings.instance_id
    url = settings.redis_url_value()

    @cache
    def client() -> redis.Redis:
        assert url is not None
        return redis.Redis.from_url(
            url, socket_timeout=SEND_TIMEOUT_SECONDS, socket_connect_timeout=SEND_TIMEOUT_SECONDS
        )

    def liveness() -> Liveness:
        if url is None:
            return DatabaseLiveness(engine_factory(), settings.lost_after_seconds)
        return RedisLiveness(client(), settings.redis_prefix, settings.lost_after_seconds)

    def beacon() -> RedisBeacon | None:
        if url is None:
            return None
        return RedisBeacon(client(), settings.redis_prefix, iid, settings.lost_after_seconds)

    dramatiq_own = [m for m in standard_middleware() if not isinstance(m, AgeLimit)]
    # Redis only: the in-memory broker acknowledges nothing, so each thread waits there.
    acks = HeldAcks() if url is not None else None
    middleware: list[Middleware] = [
        AgeLimit(),
        Tracking(engine_factory, iid, liveness, acks),
        WorkerHeartbeat(
            engine_factory, iid, settings.heartbeat_interval, heartbeat_file, beacon_factory=beacon
        ),
        *dramatiq_own,
    ]
    if acks is None:
        return StubBroker(middleware=middleware)
    namespace = dramatiq_namespace(settings)
    middleware.append(RecordRefs())
    return HeldAckBroker(url=url, namespace=namespace, middleware=middleware, acks=acks)
