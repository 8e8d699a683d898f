"""services.locks against a real Redis, and the same semantics on the process-local backend.

Every test that takes the ``backend`` fixture runs twice: on Redis (keys under the test's
own prefix) and on the local backend of embedded mode. Holders in other threads stand for
other processes (tests/integration/test_lock_processes.py uses real ones).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import redis

from services.context import FireInfo, _set_current, take_skip_reason
from services.errors import LockBusy, LockError
from services.locks import Lock, locked
from services.locks.backends import Backend, LocalBackend, RedisBackend
from services.locks.config import _reset, configure, current_backend
from tests.conftest import REDIS_SERVER
from tests.waiting import wait_for

#: Bound on anything that should happen "at once" or "within a TTL" here: generous, because
#: other test runs share the machine's two cores.
SOON = 10.0


@pytest.fixture(params=["redis", "local"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    _reset()
    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        configure(redis_url=REDIS_SERVER, prefix=prefix, instance_id="holder-test")
    else:
        configure(instance_id="holder-test")
    chosen = current_backend()
    yield chosen
    _reset()
    if isinstance(chosen, RedisBackend):
        chosen.client.close()


@pytest.fixture(autouse=True)
def _no_fire_left() -> Iterator[None]:
    yield
    take_skip_reason()
    _set_current(None)


@contextmanager
def held_elsewhere(key: str, ttl: float = 30.0) -> Iterator[Lock]:
    """``key`` held by another thread (as another process would) until the block ends."""
    holder = Lock(key, ttl=ttl)
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with holder:
            taken.set()
            done.wait(SOON * 3)

    thread = threading.Thread(target=hold, name="other-holder")
    thread.start()
    try:
        assert taken.wait(SOON), "the other holder never got the lock"
        yield holder
    finally:
        done.set()
        thread.join(SOON)


def tried_elsewhere(key: str, ttl: float = 5.0) -> Lock:
    """A ``skip`` lock on ``key`` tried by another thread: truthy if it got it."""
    other = Lock(key, ttl=ttl, on_busy="skip")
    thread = threading.Thread(target=other.acquire)
    thread.start()
    thread.join(SOON)
    return other


def vanish(backend: Backend, key: str) -> None:
    """Drop a held lock behind its holder's back, as an empty Redis restart does."""
    if isinstance(backend, RedisBackend):
        backend.client.delete(backend.redis_key(key))
    else:
        assert isinstance(backend, LocalBackend)
        with backend._changed:
            backend._locks.pop(key)


def fire() -> FireInfo:
    return FireInfo(
        schedule="sync",
        scheduled_for=datetime(2026, 11, 30, 6, 0, tzinfo=UTC),
        kind="scheduled",
        fire_id=1,
        message_id="m-1",
        attempt=0,
    )


# -- one holder ---------------------------------------------------------------------------


def test_one_holder_at_a_time_and_a_release_frees_it(backend: Backend) -> None:
    with held_elsewhere("cache") as other:
        with pytest.raises(LockBusy) as busy:
            Lock("cache", ttl=5).acquire()
        message = str(busy.value)
        assert message.startswith("lock 'cache' is busy: held by holder-test")
        assert "thread other-holder" in message and " since 20" in message
        assert busy.value.key == "cache" and busy.value.waited is None
        assert bool(other) and not other.lost
    with Lock("cache", ttl=5) as held:
        assert held
    fields, left = backend.holder("cache")
    assert fields is None and left is None


def test_a_thread_cannot_take_a_lock_it_holds(backend: Backend) -> None:
    with Lock("cache", ttl=5), pytest.raises(LockError, match="not reentrant"):
        Lock("cache", ttl=5, on_busy="skip").acquire()
    held = Lock("cache", ttl=5)  # released above: free again
    with held, pytest.raises(LockError, match="already held by this handle"):
        held.acquire()


def test_skip_returns_a_falsy_handle_and_says_why(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.locks")
    with held_elsewhere("cache"), Lock("cache", ttl=5, on_busy="skip") as held:
        assert not held and not held.acquired and not held.lost
    skipped = [r for r in caplog.records if getattr(r, "action", "") == "lock_skipped"]
    assert len(skipped) == 1 and "lock 'cache' is held by holder-test" in skipped[0].getMessage()
    assert take_skip_reason() is None  # not inside a fire: nothing to mark


def test_skip_inside_a_fire_marks_the_attempt_skipped_with_the_reason(backend: Backend) -> None:
    _set_current(fire())
    with held_elsewhere("sync-eu"):
        assert Lock("sync-eu", ttl=5, on_busy="skip").acquire() is False
    reason = take_skip_reason()
    assert reason is not None
    assert reason.startswith("lock 'sync-eu' is held by holder-test (thread other-holder")


def test_the_holder_in_a_fire_is_named_with_its_fire(backend: Backend) -> None:
    _set_current(fire())
    with Lock("sync-eu", ttl=5):
        fields, _ = backend.holder("sync-eu")
    assert fields is not None and fields["fire"] == "sync@2026-11-30T06:00:00Z"


# -- waiting ------------------------------------------------------------------------------


def test_wait_acquires_once_the_holder_releases_within_the_timeout(backend: Backend) -> None:
    releasing = threading.Event()
    taken = threading.Event()

    def hold_then_release() -> None:
        with Lock("report", ttl=30):
            taken.set()
            time.sleep(0.3)  # long enough for the waiter to be waiting
            releasing.set()

    thread = threading.Thread(target=hold_then_release)
    thread.start()
    assert taken.wait(SOON)
    started = time.monotonic()
    with Lock("report", ttl=5, on_busy="wait", timeout=SOON * 2) as held:
        assert held and releasing.is_set()  # got it only once the holder let go
        assert time.monotonic() - started < SOON
    thread.join(SOON)


def test_wait_acquires_once_a_dead_holder_s_lock_expires(backend: Backend) -> None:
    dead = Lock("report", ttl=0.5, extend=False)
    thread = threading.Thread(target=dead.acquire)  # takes it and never releases
    thread.start()
    thread.join(SOON)
    _, left = backend.holder("report")
    assert left is not None and 0 < left <= 0.5
    started = time.monotonic()
    with Lock("report", ttl=5, on_busy="wait", timeout=SOON * 2) as held:
        waited = time.monotonic() - started
        assert held and left - 0.1 <= waited < SOON
    assert dead.lost


def test_wait_gives_up_after_its_timeout(backend: Backend) -> None:
    with held_elsewhere("report"):
        started = time.monotonic()
        with pytest.raises(LockBusy, match="gave up after waiting") as busy:
            Lock("report", ttl=5, on_busy="wait", timeout=0.4).acquire()
        assert 0.4 <= time.monotonic() - started < SOON
        assert busy.value.waited is not None and busy.value.waited >= 0.4
        assert "held by holder-test (thread other-holder" in str(busy.value)


# -- expiry, extension, loss --------------------------------------------------------------


def test_an_expired_and_retaken_lock_is_not_released_by_its_old_holder(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    old = Lock("cache", ttl=0.3, extend=False)
    assert old.acquire()
    new = Lock("cache", ttl=30, extend=False, on_busy="wait", timeout=SOON)
    thread = threading.Thread(target=new.acquire)
    thread.start()
    thread.join(SOON * 2)
    assert new.acquired and old.lost  # by its own clock the old holder knows

    old.release()  # compare-and-delete: the token is not the old holder's any more
    fields, left = backend.holder("cache")
    assert fields is not None and left is not None and left > 25
    with pytest.raises(LockBusy):
        Lock("cache", ttl=1).acquire()
    assert any(getattr(r, "action", "") == "lock_expired" for r in caplog.records)
    assert old.lost  # and it stays so after the release, for the work to learn it


def test_a_lock_lost_under_its_holder_is_not_extended_by_it_and_it_learns_so(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.locks")
    old = Lock("cache", ttl=0.9)  # extended every 0.3 s
    assert old.acquire()
    vanish(backend, "cache")
    new = Lock("cache", ttl=5, extend=False)
    thread = threading.Thread(target=new.acquire)
    thread.start()
    thread.join(SOON)
    assert new.acquired

    wait_for(lambda: old.lost, timeout=SOON, what="the old holder's extender to notice")
    lost = [r for r in caplog.records if getattr(r, "action", "") == "lock_lost"]
    assert len(lost) == 1 and lost[0].levelname == "WARNING"
    _, left = backend.holder("cache")
    assert left is not None and left > 0.9  # not reset to the old holder's TTL
    with pytest.raises(LockError, match="was lost while held"):
        old.check()
    old.release()
    fields, _ = backend.holder("cache")
    assert fields is not None  # still the new holder's
    new.release()


def test_extension_keeps_the_lock_through_a_job_longer_than_its_ttl(backend: Backend) -> None:
    ttl = 0.6
    with Lock("long-job", ttl=ttl) as held:
        until = time.monotonic() + 4 * ttl
        while time.monotonic() < until:
            assert not tried_elsewhere("long-job")  # as another process would, never gets it
            time.sleep(0.1)
        assert not held.lost
        held.check()
    assert not held.lost
    assert backend.holder("long-job") == (None, None)


def test_without_extension_the_lock_expires_during_a_long_job(backend: Backend) -> None:
    with Lock("long-job", ttl=0.6, extend=False) as held:
        other = wait_for(
            lambda: tried_elsewhere("long-job"), timeout=SOON, interval=0.1, what="expiry"
        )
        assert held.lost
    other.release()
    assert backend.holder("long-job") == (None, None)


# -- the decorator --------------------------------------------------------------------------


def test_the_decorator_templates_the_key_from_the_arguments(backend: Backend) -> None:
    seen: list[str] = []

    @locked("invoice-{customer_id}", ttl="30s")
    def send_invoice(customer_id: int, amount: float = 0.0) -> float:
        seen.extend(k for k in ("invoice-42", "invoice-43") if backend.holder(k)[0] is not None)
        return amount

    assert send_invoice(42, 1.5) == 1.5
    assert send_invoice(customer_id=43) == 0.0
    assert seen == ["invoice-42", "invoice-43"]
    assert backend.holder("invoice-42") == (None, None)  # released after the call


def test_the_decorator_skips_raises_or_waits_when_busy(backend: Backend) -> None:
    runs: list[int] = []

    @locked("invoice-{customer_id}", ttl=30)
    def skipping(customer_id: int) -> int:
        runs.append(customer_id)
        return customer_id

    @locked("invoice-{customer_id}", ttl=30, on_busy="raise")
    def raising(customer_id: int) -> int:
        return customer_id

    @locked("invoice-{customer_id}", ttl=30, on_busy="wait", timeout=0.3)
    def waiting(customer_id: int) -> int:
        return customer_id

    with held_elsewhere("invoice-42"):
        assert skipping(42) is None
        assert skipping(7) == 7  # another customer's lock is free
        with pytest.raises(LockBusy, match="lock 'invoice-42' is busy"):
            raising(customer_id=42)
        with pytest.raises(LockBusy, match="gave up after waiting"):
            waiting(42)
    assert runs == [7]


def test_the_decorator_inside_a_fire_records_the_skip(backend: Backend) -> None:
    @locked("sync-{region}", ttl=30)
    def sync(region: str) -> str:
        return region

    _set_current(fire())
    with held_elsewhere("sync-eu"):
        assert sync("eu") is None
    reason = take_skip_reason()
    assert reason is not None and reason.startswith("lock 'sync-eu' is held by holder-test")


# -- Redis specifics ----------------------------------------------------------------------


def test_redis_keys_live_under_the_prefix_with_who_holds_them(
    redis_prefix: str, redis_client: redis.Redis
) -> None:
    _reset()
    configure(redis_url=REDIS_SERVER, prefix=redis_prefix, instance_id="holder-test")
    try:
        with Lock("cache:eu", ttl=5):
            raw = redis_client.get(f"{redis_prefix}:lock:cache:eu")
            assert raw is not None
            value = json.loads(raw)
            assert len(value["token"]) == 32
            assert value["holder"] == "holder-test" and value["thread"] == "MainThread"
            assert 0 < redis_client.pttl(f"{redis_prefix}:lock:cache:eu") <= 5000
        assert redis_client.exists(f"{redis_prefix}:lock:cache:eu") == 0
    finally:
        _reset()


def test_an_unreachable_redis_is_a_lock_error_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _reset()
    configure(redis_url="redis://:hunter2-secret@127.0.0.1:1/0", prefix="nowhere")
    try:
        with pytest.raises(LockError, match="Redis failed") as failed:
            Lock("cache", ttl=5).acquire()
        assert "hunter2-secret" not in str(failed.value)
        assert "hunter2-secret" not in caplog.text
    finally:
        _reset()
