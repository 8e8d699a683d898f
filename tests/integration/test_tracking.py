"""The tracking middleware in a real Dramatiq worker on a real Redis broker (invariant 5).

Fires are made the way the scheduler makes them (Fence.claim, then Dispatcher.send);
a ``dramatiq.Worker`` runs in this process on the broker ``make_broker`` builds for
workers, and the test watches ``cronwork_fires`` / ``cronwork_attempts``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
import redis
from sqlalchemy import Engine, text

from services.context import FireInfo, current_fire
from services.scheduler.dispatch import Dispatcher
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, Fire, request
from services.store.schedule_rows import sync_schedule_rows
from services.worker.broker import worker_broker
from tests.conftest import sa_url
from tests.integration.conftest import attempt_rows, fire_rows, spec, wait_for

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
FINAL = ("succeeded", "failed", "timed_out", "skipped")


class Harness:
    """A worker-side broker with tracking, a Dramatiq worker, and a way to make fires."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        engine_factory: Callable[[], Engine],
        instance_id: str = "worker-1",
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.engines: list[Engine] = []

        def factory() -> Engine:
            eng = engine_factory()
            self.engines.append(eng)
            return eng

        self.broker = worker_broker(settings, engine_factory=factory, instance_id=instance_id)
        self.fence = Fence(engine, "scheduler-1")
        self.dispatcher = Dispatcher(self.broker, self.fence)
        self.worker: dramatiq.Worker | None = None
        self._next = 0

    def actor(self, name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(fn: Callable[..., Any]) -> Any:
            return dramatiq.actor(actor_name=name, broker=self.broker, **options)(fn)

        return register

    def start(self) -> None:
        # Dramatiq's CLI emits process_boot before starting workers; TimeLimit starts
        # its watcher thread on it, so an in-process worker must emit it too.
        self.broker.emit_after("process_boot")
        self.worker = dramatiq.Worker(self.broker, worker_threads=2, worker_timeout=100)
        self.worker.start()

    def fire(self, s: ScheduleSpec, at: datetime | None = None) -> Fire:
        """Claim and send one fire of ``s`` (a new scheduled time unless ``at`` is given)."""
        if at is None:
            at = T0 + timedelta(seconds=self._next)
            self._next += 1
        won = self.fence.claim([request(s, at, "scheduled")])
        assert len(won) == 1
        assert self.dispatcher.send(won) == 1
        return won[0]

    def wait_fire(self, fire: Fire, statuses: tuple[str, ...] = FINAL, timeout: float = 15) -> Any:
        def check() -> Any:
            rows = [r for r in fire_rows(self.engine) if r.id == fire.id]
            return rows[0] if rows and rows[0].status in statuses else None

        return wait_for(check, timeout=timeout, what=f"fire {fire.id} to become {statuses}")

    def drain(self, queue: str = "default") -> None:
        self.broker.join(queue, timeout=15_000)
        assert self.worker is not None
        self.worker.join()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout=10_000)
        self.broker.close()
        for eng in self.engines:
            eng.dispose()


@pytest.fixture
def harness_factory(
    engine: Engine, pg_url: str, settings: Settings
) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(engine_factory: Callable[[], Engine] | None = None) -> Harness:
        h = Harness(engine, settings, engine_factory or (lambda: make_engine(pg_url)))
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()


@pytest.fixture
def harness(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()


def msgs_left(client: redis.Redis, settings: Settings, queue: str = "default") -> int:
    """Messages the Redis broker still holds (queued or delivered but not acked)."""
    return int(client.hlen(f"{settings.redis_prefix}-dramatiq:{queue}.msgs"))


# -- outcomes ------------------------------------------------------------------------


def test_success_is_one_succeeded_attempt(harness: Harness) -> None:
    @harness.actor("ok_actor")
    def ok_actor(x: int, *, y: str) -> dict[str, Any]:
        time.sleep(0.02)
        return {"x": x, "y": y, "list": [1, 2]}

    harness.start()
    s = spec("ok", "ok_actor", args=(7,), kwargs={"y": "why"})
    fire = harness.fire(s)
    row = harness.wait_fire(fire)

    assert row.status == "succeeded"
    assert row.attempts == 1
    assert row.started_at is not None and row.finished_at is not None
    assert row.error is None
    [att] = attempt_rows(harness.engine, fire.message_id)
    assert att.attempt == 0
    assert att.status == "succeeded"
    assert att.fire_id == fire.id
    assert att.schedule == "ok"
    assert att.instance_id == "worker-1"
    assert att.duration_ms is not None and att.duration_ms >= 20
    assert att.finished_at >= att.started_at
    assert att.result == {"x": 7, "y": "why", "list": [1, 2]}
    assert att.error_message is None


def test_failures_are_retried_and_each_attempt_is_a_row(harness: Harness) -> None:
    calls: list[int] = []

    @harness.actor("boom_actor")
    def boom_actor() -> None:
        calls.append(1)
        raise ValueError("boom 42")

    harness.start()
    s = spec(
        "boom",
        "boom_actor",
        max_retries=2,
        min_backoff=timedelta(milliseconds=100),
        max_backoff=timedelta(milliseconds=200),
    )
    fire = harness.fire(s)
    row = harness.wait_fire(fire, ("failed", "succeeded", "timed_out"))

    assert row.status == "failed"
    assert "boom 42" in row.error
    assert row.attempts == 3
    rows = attempt_rows(harness.engine, fire.message_id)
    assert [(r.attempt, r.status) for r in rows] == [
        (0, "retrying"),
        (1, "retrying"),
        (2, "failed"),
    ]
    for r in rows:
        assert r.error_type == "ValueError"
        assert r.error_message == "boom 42"
        assert r.finished_at is not None and r.duration_ms is not None
        assert r.result is None
    harness.drain()
    assert len(calls) == 3


def test_time_limit_exceeded_is_timed_out(harness: Harness) -> None:
    @harness.actor("slow_actor")
    def slow_actor() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.02)

    harness.start()
    s = spec(
        "slow",
        "slow_actor",
        time_limit=timedelta(milliseconds=200),
        max_retries=1,
        min_backoff=timedelta(milliseconds=100),
        max_backoff=timedelta(milliseconds=100),
    )
    fire = harness.fire(s)
    row = harness.wait_fire(fire, ("failed", "succeeded", "timed_out"), timeout=20)

    assert row.status == "timed_out"
    rows = attempt_rows(harness.engine, fire.message_id)
    # The first attempt timed out and was retried; the last had no retries left.
    assert [(r.attempt, r.status) for r in rows] == [(0, "timed_out"), (1, "timed_out")]
    assert all(r.error_type == "TimeLimitExceeded" for r in rows)


# -- idempotency -----------------------------------------------------------------------


def test_a_resend_after_success_is_skipped_and_not_run_again(
    harness: Harness, redis_client: redis.Redis, settings: Settings
) -> None:
    calls: list[int] = []

    @harness.actor("once_actor")
    def once_actor() -> str:
        calls.append(1)
        return "done"

    harness.start()
    fire = harness.fire(spec("once", "once_actor"))
    harness.wait_fire(fire)
    harness.drain()
    assert len(calls) == 1

    # A re-send of the same fire (a crash before mark_enqueued, or a broker redelivery).
    assert harness.dispatcher.send([fire]) == 1

    def skipped() -> list[Any]:
        return [r for r in attempt_rows(harness.engine, fire.message_id) if r.status == "skipped"]

    [skip] = wait_for(skipped, what="a skipped attempt")
    assert skip.error_message == "fire already succeeded"
    harness.drain()
    wait_for(lambda: msgs_left(redis_client, settings) == 0, what="the message to be acked")

    assert len(calls) == 1
    rows = attempt_rows(harness.engine, fire.message_id)
    # The successful attempt keeps its row; the skip is a row of its own.
    assert sorted(r.status for r in rows) == ["skipped", "succeeded"]
    succeeded = next(r for r in rows if r.status == "succeeded")
    assert succeeded.attempt == 0
    assert succeeded.result == "done"
    assert succeeded.duration_ms is not None
    assert skip.attempt == 1
    [row] = [r for r in fire_rows(harness.engine) if r.id == fire.id]
    assert row.status == "succeeded"


def test_overlap_skip_skips_a_fire_while_the_previous_one_runs(harness: Harness) -> None:
    release = threading.Event()
    started = threading.Event()

    @harness.actor("long_actor")
    def long_actor() -> None:
        started.set()
        release.wait(20)

    s = spec("long", "long_actor", overlap="skip")
    sync_schedule_rows(harness.engine, {s.name: s})
    harness.start()
    try:
        first = harness.fire(s)
        assert started.wait(10)
        harness.wait_fire(first, ("running",))
        second = harness.fire(s)
        row2 = harness.wait_fire(second)
    finally:
        release.set()
    assert row2.status == "skipped"
    assert f"fire {first.id}" in row2.error and "overlap: skip" in row2.error
    assert row2.finished_at is not None
    [att2] = attempt_rows(harness.engine, second.message_id)
    assert att2.status == "skipped"
    assert "still running" in att2.error_message

    row1 = harness.wait_fire(first)
    assert row1.status == "succeeded"
    # Once the first is done, the next fire runs.
    third = harness.fire(s)
    assert harness.wait_fire(third).status == "succeeded"


def test_overlap_allow_runs_fires_side_by_side(harness: Harness) -> None:
    release = threading.Event()
    running = threading.Semaphore(0)

    @harness.actor("side_actor")
    def side_actor() -> None:
        running.release()
        release.wait(20)

    s = spec("side", "side_actor")  # overlap: allow
    harness.start()
    try:
        fires = [harness.fire(s), harness.fire(s)]
        assert running.acquire(timeout=10) and running.acquire(timeout=10)
    finally:
        release.set()
    assert [harness.wait_fire(f).status for f in fires] == ["succeeded", "succeeded"]


# -- context ---------------------------------------------------------------------------


def test_current_fire_inside_the_actor(harness: Harness) -> None:
    seen: list[FireInfo | None] = []

    @harness.actor("ctx_actor")
    def ctx_actor() -> None:
        info = current_fire()
        seen.append(info)
        if info is not None and info.attempt == 0:
            raise RuntimeError("first attempt fails")

    harness.start()
    s = spec(
        "ctx",
        "ctx_actor",
        max_retries=1,
        min_backoff=timedelta(milliseconds=100),
        max_backoff=timedelta(milliseconds=100),
    )
    at = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    fire = harness.fire(s, at=at)
    assert harness.wait_fire(fire).status == "succeeded"

    assert len(seen) == 2
    assert all(info is not None for info in seen)
    infos = [info for info in seen if info is not None]
    assert [i.attempt for i in infos] == [0, 1]
    for info in infos:
        assert info.schedule == "ctx"
        assert info.scheduled_for == at
        assert info.kind == "scheduled"
        assert info.fire_id == fire.id
        assert info.message_id == fire.message_id
    assert current_fire() is None  # not inside a fire here


def test_an_untracked_message_runs_without_a_fire(harness: Harness) -> None:
    seen: list[FireInfo | None] = []
    done = threading.Event()

    @harness.actor("plain_actor")
    def plain_actor() -> None:
        seen.append(current_fire())
        done.set()

    harness.start()
    plain_actor.send()
    assert done.wait(10)
    assert seen == [None]
    assert attempt_rows(harness.engine) == []


# -- tracking failures never break the job ---------------------------------------------


def _run_one_untracked(
    h: Harness, redis_client: redis.Redis, settings: Settings, name: str
) -> list[int]:
    calls: list[int] = []

    @h.actor(f"{name}_actor")
    def actor() -> str:
        calls.append(1)
        return "ran"

    h.start()
    h.fire(spec(name, f"{name}_actor"))
    wait_for(lambda: calls, what="the actor to run")
    h.drain()
    wait_for(lambda: msgs_left(redis_client, settings) == 0, what="the message to be acked")
    return calls


def test_tracking_database_missing_does_not_fail_the_job(
    harness_factory: Callable[..., Harness],
    redis_client: redis.Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = sa_url("cw_no_such_database_here")
    h = harness_factory(lambda: make_engine(missing))
    with caplog.at_level(logging.ERROR, logger="services.worker.tracking"):
        calls = _run_one_untracked(h, redis_client, settings, "nodb")
    assert calls == [1]  # ran once: no retry caused by tracking
    assert "tracking write failed" in caplog.text


def test_tracking_table_dropped_does_not_fail_the_job(
    harness: Harness,
    redis_client: redis.Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with harness.engine.begin() as conn:
        conn.execute(text("DROP TABLE cronwork_attempts"))
    with caplog.at_level(logging.ERROR, logger="services.worker.tracking"):
        calls = _run_one_untracked(harness, redis_client, settings, "notable")
    assert calls == [1]
    assert "tracking write failed" in caplog.text


def test_engine_factory_that_raises_does_not_fail_the_job(
    harness_factory: Callable[..., Harness],
    redis_client: redis.Redis,
    settings: Settings,
) -> None:
    def broken() -> Engine:
        raise RuntimeError("cannot build an engine")

    h = harness_factory(broken)
    assert _run_one_untracked(h, redis_client, settings, "noengine") == [1]
