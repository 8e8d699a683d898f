"""The Dramatiq broker a *sender* uses: the scheduler, the CLI, application code.

Workers build theirs in services/worker/broker.py: the same middleware that shapes a
message (retries, time limits) plus everything that runs a job (tracking, heartbeats).
"""

from __future__ import annotations

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

from services.constants import LOCK_OPTION, MAX_RUNTIME_OPTION
from services.schedules.spec import DEFAULT_MAX_RETRIES
from services.settings import Settings

#: A schedule without ``time_limit`` runs unbounded (Dramatiq's own default is 10 minutes,
#: which would silently kill long nightly jobs); an actor's own time_limit still applies.
NO_TIME_LIMIT_MS = 7 * 24 * 3600 * 1000
#: Longest wait for Redis on one send: a Redis that hangs instead of failing must not stall
#: the scheduler's firing thread (the fire stays pending and is re-sent).
SEND_TIMEOUT_SECONDS = 5.0


def dramatiq_namespace(settings: Settings) -> str:
    """The Redis key namespace of cronwork's queues (under the configured prefix)."""
    return f"{settings.redis_prefix}-dramatiq"


class CronworkActorOptions(Middleware):
    """Declares the actor options cronwork reads (``lock``, ``max_runtime``), so
    ``@dramatiq.actor`` accepts them on every broker an actor module is imported onto."""

    @property
    def actor_options(self) -> set[str]:
        return {LOCK_OPTION, MAX_RUNTIME_OPTION}


def standard_middleware() -> list[Middleware]:
    """Dramatiq's own middleware, with cronwork's defaults, in Dramatiq's order."""
    return [
        CronworkActorOptions(),
        AgeLimit(),
        TimeLimit(time_limit=NO_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=DEFAULT_MAX_RETRIES),
    ]


def sender_broker(settings: Settings) -> dramatiq.Broker:
    """A broker for sending: Redis with short socket timeouts, or in memory (embedded)."""
    url = settings.redis_url_value()
    if url is None:
        return StubBroker(middleware=standard_middleware())
    return RedisBroker(
        url=url,
        namespace=dramatiq_namespace(settings),
        middleware=standard_middleware(),
        socket_timeout=SEND_TIMEOUT_SECONDS,
        socket_connect_timeout=SEND_TIMEOUT_SECONDS,
    )
