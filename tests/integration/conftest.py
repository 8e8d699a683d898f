"""Helpers for the integration tests on real Postgres and Redis (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dramatiq
import dramatiq.broker
import pytest
import redis
from sqlalchemy import Engine, select

from services import broker as brokers
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.tables import attempts, fires
from tests.conftest import REDIS_SERVER

#: A Redis URL nothing listens on.
DEAD_REDIS = "redis://127.0.0.1:1/0"


def make_settings(prefix: str, *, redis_url: str = REDIS_SERVER, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "instance_id": "test-instance",
    }
    values.update(extra)
    return Settings(**values)


def spec(name: str = "tick", actor: str = "tick_actor", **kw: Any) -> ScheduleSpec:
    """An ``every: 1s`` schedule unless told otherwise, with quick retries."""
    values: dict[str, Any] = {
        "trigger": "every",
        "every": timedelta(seconds=1),
        "max_retries": 0,
        "min_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(milliseconds=200),
    }
    values.update(kw)
    return ScheduleSpec(name=name, actor=actor, **values)


def fire_rows(engine: Engine, schedule: str | None = None) -> list[Any]:
    query = select(fires).order_by(fires.c.scheduled_for)
    if schedule is not None:
        query = query.where(fires.c.schedule == schedule)
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def attempt_rows(engine: Engine, message_id: str | None = None) -> list[Any]:
    query = select(attempts).order_by(attempts.c.message_id, attempts.c.attempt)
    if message_id is not None:
        query = query.where(attempts.c.message_id == message_id)
    with engine.connect() as conn:
        return list(conn.execute(query).all())


@pytest.fixture
def settings(redis_prefix: str) -> Settings:
    return make_settings(redis_prefix)


@pytest.fixture(autouse=True)
def _restore_global_broker() -> Iterator[None]:
    """Tests build their own brokers; dramatiq's global one is put back afterwards."""
    saved = dramatiq.broker.global_broker
    yield
    dramatiq.broker.global_broker = saved


@pytest.fixture
def send_broker(settings: Settings) -> Iterator[dramatiq.Broker]:
    """A broker as the scheduler has it: no tracking middleware."""
    broker = brokers.sender_broker(settings)
    yield broker
    broker.close()


def msgs_left(client: redis.Redis, settings: Settings, queue: str = "default") -> int:
    """Messages the Redis broker still holds (queued or delivered but not acked)."""
    return int(client.hlen(f"{brokers.dramatiq_namespace(settings)}:{queue}.msgs"))
