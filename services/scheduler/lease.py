"""The scheduler lease: one replica fires, the others stand by.

Correctness never rests on the lease (the fence in Postgres does that); the
lease only keeps standbys idle. A leader treats its lease as lost as soon as its
own clock says it may have expired, without waiting to hear from Redis.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import redis

from services.constants import LEASE_KEY
from services.owned_keys import OwnedKeys, new_value, read_value
from services.settings import Settings
from services.timeutil import iso, utcnow


class Lease(Protocol):
    ttl: float

    def acquire(self) -> bool: ...
    def renew(self) -> bool: ...
    def release(self) -> None: ...
    def valid(self) -> bool: ...
    def holder(self) -> dict[str, Any] | None: ...


class RedisLease:
    """``SET key token NX PX ttl``; renewed by compare-and-pexpire; released by compare-and-del."""

    def __init__(self, client: redis.Redis, key: str, ttl: float, instance_id: str) -> None:
        self.client = client
        self.key = key
        self.ttl = ttl
        self.instance_id = instance_id
        self._value = ""
        self._valid_until = 0.0
        self._keys = OwnedKeys(client)

    def acquire(self) -> bool:
        started = time.monotonic()
        value = new_value(instance_id=self.instance_id)
        if not self._keys.take(self.key, value, int(self.ttl * 1000)):
            return False
        self._value = value
        self._valid_until = started + self.ttl
        return True

    def renew(self) -> bool:
        if not self._value:
            return False
        started = time.monotonic()
        ok = self._keys.extend(self.key, self._value, int(self.ttl * 1000))
        if ok:
            # Count from before the call: the lease may have been set late in the round trip.
            self._valid_until = started + self.ttl
        else:
            self._value = ""
            self._valid_until = 0.0
        return ok

    def release(self) -> None:
        value, self._value, self._valid_until = self._value, "", 0.0
        if value:
            self._keys.delete(self.key, value)

    def valid(self) -> bool:
        """Whether this process may still act as leader, by its own clock."""
        return bool(self._value) and time.monotonic() < self._valid_until

    def holder(self) -> dict[str, Any] | None:
        data = read_value(self.client.get(self.key))
        if data is None:
            return None
        return {"instance_id": data.get("instance_id"), "since": data.get("since")}


class LocalLease:
    """Embedded mode: one process, always the leader."""

    def __init__(self, instance_id: str, ttl: float = 10.0) -> None:
        self.instance_id = instance_id
        self.ttl = ttl
        self._since: str | None = None

    def acquire(self) -> bool:
        self._since = iso(utcnow())
        return True

    def renew(self) -> bool:
        return self._since is not None

    def release(self) -> None:
        self._since = None

    def valid(self) -> bool:
        return self._since is not None

    def holder(self) -> dict[str, Any] | None:
        if self._since is None:
            return None
        return {"instance_id": self.instance_id, "since": self._since}


def make_lease(settings: Settings) -> Lease:
    """The lease from settings: in Redis, or local in embedded mode (one process only)."""
    url = settings.redis_url_value()
    if url is None:
        return LocalLease(settings.instance_id, settings.lease_ttl)
    # A lease call must return well within a renewal period, or a hung Redis would keep a
    # leader believing it still leads.
    client = redis.Redis.from_url(url, socket_timeout=max(settings.lease_ttl / 3, 0.5))
    key = f"{settings.redis_prefix}:{LEASE_KEY}"
    return RedisLease(client, key, settings.lease_ttl, settings.instance_id)
