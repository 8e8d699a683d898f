"""RedisLease on a real Redis: one holder at a time, expiry, compare-and-renew/release."""

from __future__ import annotations

import time

import redis

from services.constants import LEASE_KEY
from services.scheduler.lease import RedisLease
from tests.waiting import wait_for


def leases(client: redis.Redis, prefix: str, ttl: float = 5.0) -> tuple[RedisLease, RedisLease]:
    key = f"{prefix}:{LEASE_KEY}"
    return RedisLease(client, key, ttl, "inst-a"), RedisLease(client, key, ttl, "inst-b")


def test_only_one_acquires_and_the_other_after_release(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    a, b = leases(redis_client, redis_prefix)
    assert a.acquire()
    assert not b.acquire()
    assert a.valid() and not b.valid()
    assert a.holder() == b.holder()
    holder = b.holder()
    assert holder is not None and holder["instance_id"] == "inst-a"
    assert holder["since"].endswith("Z")

    assert a.renew()
    assert not b.renew()  # never held it
    assert a.valid()

    a.release()
    assert not a.valid()
    assert a.holder() is None
    assert b.acquire()
    assert b.valid()
    holder = a.holder()
    assert holder is not None and holder["instance_id"] == "inst-b"
    assert not a.acquire()


def test_acquire_twice_by_the_holder_is_refused(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    # SET NX: a holder does not silently re-acquire (it renews instead).
    a, _ = leases(redis_client, redis_prefix)
    assert a.acquire()
    assert not a.acquire()
    assert a.valid()  # the failed acquire did not drop the lease it holds
    assert a.renew()


def test_expiry_hands_the_lease_over_and_the_old_holder_learns_it(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    a, b = leases(redis_client, redis_prefix, ttl=0.3)
    assert a.acquire()
    assert not b.acquire()
    # No renew: by its own clock the holder stops being valid once the ttl is over ...
    wait_for(lambda: not a.valid(), timeout=2, what="a's lease to lapse locally")
    # ... and Redis lets the other take it.
    wait_for(b.acquire, timeout=2, what="b to acquire after expiry")
    holder = a.holder()
    assert holder is not None and holder["instance_id"] == "inst-b"

    assert not a.renew()  # compare-and-renew fails: someone else holds it
    assert not a.valid()
    assert b.valid() and b.renew()
    holder = b.holder()
    assert holder is not None and holder["instance_id"] == "inst-b"


def test_valid_turns_false_by_the_local_clock_even_if_redis_still_has_it(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    a, _ = leases(redis_client, redis_prefix, ttl=0.3)
    assert a.acquire()
    redis_client.pexpire(f"{redis_prefix}:{LEASE_KEY}", 60_000)  # Redis is "slow" to expire
    time.sleep(0.35)
    assert not a.valid()  # a paused leader must not trust a lease it cannot vouch for
    assert a.renew()  # still the holder in Redis: renewing makes it valid again
    assert a.valid()


def test_release_by_a_non_holder_does_not_delete_the_lease(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    a, b = leases(redis_client, redis_prefix, ttl=0.3)
    assert a.acquire()
    b.release()  # never held it
    holder = a.holder()
    assert holder is not None and holder["instance_id"] == "inst-a"

    # A former holder whose lease expired and was taken releases: the new holder keeps it.
    wait_for(b.acquire, timeout=2, what="b to acquire after expiry")
    b.renew()
    a.release()
    holder = b.holder()
    assert holder is not None and holder["instance_id"] == "inst-b"
    assert b.renew()
