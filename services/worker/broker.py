"""The worker's Dramatiq broker: Dramatiq's middleware plus tracking and heartbeats."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from services.broker import dramatiq_namespace, standard_middleware
from services.settings import Settings
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

    Its consumers keep Dramatiq's socket defaults (they wait on Redis on purpose).
    """
    iid = instance_id or settings.instance_id
    middleware: list[Middleware] = [
        # Before Retries: after-hooks run in reverse, so Retries decides first.
        Tracking(engine_factory, iid),
        WorkerHeartbeat(engine_factory, iid, settings.heartbeat_interval, heartbeat_file),
        *standard_middleware(),
    ]
    url = settings.redis_url_value()
    if url is None:
        return StubBroker(middleware=middleware)
    return RedisBroker(url=url, namespace=dramatiq_namespace(settings), middleware=middleware)
