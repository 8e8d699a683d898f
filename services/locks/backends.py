"""Where locks live: in Redis (every process of a deployment), or in this process (embedded).

Both keep the same value (a random token and who holds it, see services/owned_keys.py)
with a TTL, take it only if free, and extend or delete it only for the exact value; so a
lock behaves the same in both, except for how far its exclusion reaches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, Protocol

import redis

from services.constants import LOCK_KEY, LOCK_RELEASED_CHANNEL
from services.owned_keys import OwnedKeys, read_value

#: Longest wait for the subscription that wakes a waiter on release; without it the
#: waiter still notices the release on its next poll.
SUBSCRIBE_TIMEOUT_SECONDS = 1.0


class Waiter(Protocol):
    def wait(self, timeout: float) -> None:
        """Return when the lock may have been released, or after ``timeout`` seconds."""


class Backend(Protocol):
    #: Who takes locks through this backend (the instance id), written into each lock.
    identity: str
    #: Whether the locks exclude other processes (Redis) or only this one's threads.
    shared: bool

    def take(self, key: str, value: str, ttl_ms: int) -> bool: ...
    def extend(self, key: str, value: str, ttl_ms: int) -> bool: ...
    def release(self, key: str, value: str) -> bool: ...
    def holder(self, key: str) -> tuple[dict[str, Any] | None, float | None]:
        """The holder's fields and the seconds its lock has left (None: free or unknown)."""
        ...

    def waiter(self, key: str) -> AbstractContextManager[Waiter]:
        """A :class:`Waiter` for ``key``; enter it before trying to take the lock, so a
        release in between is not missed."""
        ...


class RedisBackend:
    """Locks at ``<prefix>:lock:<key>``; a release publishes on ``<prefix>:lock-released:<key>``."""

    shared = True

    def __init__(self, client: redis.Redis, prefix: str, identity: str) -> None:
        self.client = client
        self.prefix = prefix
        self.identity = identity
        self._keys = OwnedKeys(client)

    def redis_key(self, key: str) -> str:
        return f"{self.prefix}:{LOCK_KEY}:{key}"

    def _channel(self, key: str) -> str:
        return f"{self.prefix}:{LOCK_RELEASED_CHANNEL}:{key}"

    def take(self, key: str, value: str, ttl_ms: int) -> bool:
        return self._keys.take(self.redis_key(key), value, ttl_ms)

    def extend(self, key: str, value: str, ttl_ms: int) -> bool:
        return self._keys.extend(self.redis_key(key), value, ttl_ms)

    def release(self, key: str, value: str) -> bool:
        if not self._keys.delete(self.redis_key(key), value):
            return False
        # The lock is free either way; without the wake-up, waiters notice on their next poll.
        with suppress(redis.RedisError):
            self.client.publish(self._channel(key), b"")
        return True

    def holder(self, key: str) -> tuple[dict[str, Any] | None, float | None]:
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.redis_key(key))
        pipe.pttl(self.redis_key(key))
        raw, pttl = pipe.execute()
        left = pttl / 1000 if raw is not None and pttl >= 0 else None
        return read_value(raw), left

    @contextmanager
    def waiter(self, key: str) -> Iterator[Waiter]:
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(self._channel(key))
            # Read the confirmation: from then on, no release can slip by unheard.
            pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_SECONDS)
            yield _PubSubWaiter(pubsub)
        finally:
            pubsub.close()


class _PubSubWaiter:
    def __init__(self, pubsub: redis.client.PubSub) -> None:
        self._pubsub = pubsub

    def wait(self, timeout: float) -> None:
        self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)


class LocalBackend:
    """Locks in this process's memory, with the same TTL, token and release semantics."""

    shared = False

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self._locks: dict[str, tuple[str, float]] = {}  # key -> (value, monotonic expiry)
        self._changed = threading.Condition()
        #: Bumped on every release, so a waiter that looked before it knows to look again.
        self._releases = 0

    def _current(self, key: str) -> str | None:
        entry = self._locks.get(key)
        if entry is None:
            return None
        if time.monotonic() >= entry[1]:
            del self._locks[key]
            return None
        return entry[0]

    def take(self, key: str, value: str, ttl_ms: int) -> bool:
        with self._changed:
            if self._current(key) is not None:
                return False
            self._locks[key] = (value, time.monotonic() + ttl_ms / 1000)
            return True

    def extend(self, key: str, value: str, ttl_ms: int) -> bool:
        with self._changed:
            if self._current(key) != value:
                return False
            self._locks[key] = (value, time.monotonic() + ttl_ms / 1000)
            return True

    def release(self, key: str, value: str) -> bool:
        with self._changed:
            if self._current(key) != value:
                return False
            del self._locks[key]
            self._releases += 1
            self._changed.notify_all()
            return True

    def holder(self, key: str) -> tuple[dict[str, Any] | None, float | None]:
        with self._changed:
            value = self._current(key)
            if value is None:
                return None, None
            return read_value(value), self._locks[key][1] - time.monotonic()

    @contextmanager
    def waiter(self, key: str) -> Iterator[Waiter]:
        yield _LocalWaiter(self)


class _LocalWaiter:
    def __init__(self, backend: LocalBackend) -> None:
        self._backend = backend
        with backend._changed:
            self._seen = backend._releases

    def wait(self, timeout: float) -> None:
        backend = self._backend
        with backend._changed:
            if backend._releases == self._seen:
                backend._changed.wait(timeout)
            self._seen = backend._releases
