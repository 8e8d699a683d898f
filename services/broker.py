"""The Dramatiq broker with cronwork's middleware, for workers and for senders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from sqlalchemy import Engine

from services.schedules.spec import DEFAULT_MAX_RETRIES
from services.settings import Settings
from services.worker.heartbeat import WorkerHeartbeat
from services.worker.tracking import Tracking

#: A schedule without ``time_limit`` runs unbounded (Dramatiq's own default is 10 minutes,
#: which would silently kill long nightly jobs); an actor's own time_limit still applies.
NO_TIME_LIMIT_MS = 7 * 24 * 3600 * 1000
#: Longest wait for Redis on one send from a scheduler.
SEND_TIMEOUT_SECONDS = 5.0


def make_broker(
    settings: Settings,
    *,
    engine_factory: Callable[[], Engine] | None = None,
    instance_id: str | None = None,
    heartbeat_file: Path | None = None,
) -> dramatiq.Broker:
    """A broker; with ``engine_factory`` it also tracks attempts and heartbeats (workers)."""
    middleware: list[Middleware] = []
    if engine_factory is not None:
        iid = instance_id or settings.instance_id
        # Before Retries: after-hooks run in reverse, so Retries decides first.
        middleware.append(Tracking(engine_factory, iid))
        middleware.append(
            WorkerHeartbeat(engine_factory, iid, settings.heartbeat_interval, heartbeat_file)
        )
    middleware += [
        AgeLimit(),
        TimeLimit(time_limit=NO_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=DEFAULT_MAX_RETRIES),
    ]
    url = settings.redis_url_value()
    if url is None:
        return StubBroker(middleware=middleware)
    options: dict[str, float] = {}
    if engine_factory is None:
        # Senders (the scheduler, the CLI): a Redis that hangs instead of failing must not
        # stall the firing thread; the fire stays pending and is re-sent. Workers keep
        # Dramatiq's defaults for their consumers.
        options = {"socket_timeout": SEND_TIMEOUT_SECONDS, "socket_connect_timeout": 5.0}
    return RedisBroker(
        url=url,
        namespace=f"{settings.redis_prefix}-dramatiq",
        middleware=middleware,
        **options,
    )
