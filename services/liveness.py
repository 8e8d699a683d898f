"""Which workers are alive, judged by something that survives a database outage.

A worker's heartbeat is a Redis key with a TTL of ``lost_after`` (``WORKER_KEY``), set on
every beat. Redis is what the worker consumes from: a worker that cannot reach it does no
work anyway, while a worker that cannot reach Postgres keeps running its jobs, so a
heartbeat written to Postgres made live workers look dead during a database outage and
their jobs were run twice.

The key being gone is read as "stopped" only when that can be trusted: Redis answers now,
and has been up (its own uptime, which an empty restart resets) for at least
``lost_after``, so every live worker has had the time to beat into it. Otherwise the
answer is "unknown" and nobody is declared lost.

Embedded mode (``cronwork up`` without Redis) has one process; there the heartbeat row
in ``cronwork_instances`` is used (services/store/instances.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol

import redis
from sqlalchemy import Engine, select

from services.constants import WORKER_KEY
from services.settings import Settings
from services.store.tables import instances
from services.timeutil import as_utc, utcnow


def worker_key(prefix: str, instance_id: str) -> str:
    return f"{prefix}:{WORKER_KEY}:{instance_id}"


class Liveness(Protocol):
    def alive(self, instance_ids: Iterable[str]) -> dict[str, bool | None]:
        """True: beating; False: stopped; None: cannot tell now (never judge on that)."""
        ...


class RedisBeacon:
    """The worker's side: announce that this instance is alive, or that it stopped."""

    def __init__(self, client: redis.Redis, prefix: str, instance_id: str, ttl: float) -> None:
        self.client = client
        self.key = worker_key(prefix, instance_id)
        self.ttl_ms = max(int(ttl * 1000), 1)

    def beat(self) -> None:
        self.client.set(self.key, utcnow().isoformat(), px=self.ttl_ms)

    def stop(self) -> None:
        self.client.delete(self.key)


class RedisLiveness:
    """The watchdog's side (and a redelivered message's): is this worker still beating?"""

    def __init__(self, client: redis.Redis, prefix: str, lost_after: float) -> None:
        self.client = client
        self.prefix = prefix
        self.lost_after = lost_after

    def alive(self, instance_ids: Iterable[str]) -> dict[str, bool | None]:
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return {}
        try:
            uptime = float(self.client.info("server").get("uptime_in_seconds", 0))
            values = self.client.mget([worker_key(self.prefix, i) for i in ids])
        except redis.RedisError:
            return dict.fromkeys(ids)
        if uptime < self.lost_after:
            # Restarted recently (an empty restart loses every key): live workers may not
            # have beaten into this Redis yet.
            return {i: True if v is not None else None for i, v in zip(ids, values, strict=True)}
        return {i: v is not None for i, v in zip(ids, values, strict=True)}


class DatabaseLiveness:
    """Embedded mode: the heartbeat row of ``cronwork_instances`` (one process, one database)."""

    def __init__(self, engine: Engine, lost_after: float) -> None:
        self.engine = engine
        self.lost_after = timedelta(seconds=lost_after)

    def alive(
        self, instance_ids: Iterable[str], now: datetime | None = None
    ) -> dict[str, bool | None]:
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return {}
        now = now or utcnow()
        with self.engine.connect() as conn:
            rows = {
                r.instance_id: r
                for r in conn.execute(
                    select(
                        instances.c.instance_id, instances.c.heartbeat_at, instances.c.stopped_at
                    ).where(instances.c.instance_id.in_(ids))
                )
            }
        out: dict[str, bool | None] = {}
        for i in ids:
            row = rows.get(i)
            beat = as_utc(row.heartbeat_at) if row is not None else None
            out[i] = (
                row is not None
                and row.stopped_at is None
                and beat is not None
                and beat >= now - self.lost_after
            )
        return out


def liveness_for(settings: Settings, engine: Engine) -> Liveness:
    """Redis heartbeats when Redis is configured, else the database's (embedded mode)."""
    url = settings.redis_url_value()
    if url is None:
        return DatabaseLiveness(engine, settings.lost_after_seconds)
    client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
    return RedisLiveness(client, settings.redis_prefix, settings.lost_after_seconds)
