"""The tracking middleware in a real Dramatiq worker on a real Redis broker (invariant 5).

Fires are made the way the scheduler makes them (Fence.claim, then Dispatcher.send);
a ``dramatiq.Worker`` runs in this process on the broker ``make_broker`` builds for
workers, and the test watches ``cronwork_fires`` / ``cronwork_attempts``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from services.context import FireInfo, current_fire
from services.settings import Settings
from services.store.schedule_rows import sync_schedule_rows
from tests.integration.conftest import attempt_rows, fire_rows, msgs_left, spec
from tests.integration.worker_harness import (  # noqa: F401 (fixtures)
    Harness,
    harness_factory_fixture,
    harness_fixture,
)
from tests.waiting import wait_for

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
    assert (skip.attempt, skip.error_message) == (0, "fire already succeeded")
    harness.drain()
    wait_for(lambda: msgs_left(redis_client, settings) == 0, what="the message to be acked")

    assert len(calls) == 1
    rows = attempt_rows(harness.engine, fire.message_id)
    # The successful attempt keeps its row; the skip is a row of its own, of the same
    # attempt number (it was a second delivery of attempt 0).
    assert sorted(r.status for r in rows) == ["skipped", "succeeded"]
    succeeded = next(r for r in rows if r.status == "succeeded")
    assert succeeded.attempt == 0
    assert succeeded.result == "done"
    assert succeeded.duration_ms is not None
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


# -- a job under a lock ----------------------------------------------------------------


def test_an_actor_under_a_lock_runs_once_at_a_time_and_a_busy_lock_is_a_skip(
    harness: Harness, settings: Settings
) -> None:
    from services.locks import configure as configure_locks

    configure_locks(settings)
    started = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    @harness.actor("locked_sync", lock={"key": "sync-{region}", "ttl": "10s"})
    def locked_sync(region: str) -> None:
        calls.append(region)
        started.set()
        release.wait(20)

    harness.start()
    first = harness.fire(spec("sync-eu", "locked_sync", args=("eu",)))
    assert started.wait(15)
    # Same key while the first runs: recorded as skipped, naming the holder; not run.
    second = harness.fire(spec("sync-eu-again", "locked_sync", args=("eu",)))
    row = harness.wait_fire(second)
    assert row.status == "skipped"
    [att] = attempt_rows(harness.engine, second.message_id)
    assert att.status == "skipped"
    assert att.error_message.startswith("lock 'sync-eu' is held by ")
    # Another key is another lock: it runs beside the first.
    other = harness.fire(spec("sync-us", "locked_sync", args=("us",)))
    wait_for(lambda: "us" in calls, what="the job with another key to run")
    release.set()
    assert harness.wait_fire(first).status == "succeeded"
    assert harness.wait_fire(other).status == "succeeded"
    assert sorted(calls) == ["eu", "us"]
    # Released with the attempt: the same key runs again.
    again = harness.fire(spec("sync-eu-later", "locked_sync", args=("eu",)))
    assert harness.wait_fire(again).status == "succeeded"


def test_a_schedule_with_a_lock_skips_a_fire_while_its_previous_one_holds_it(
    harness: Harness, settings: Settings
) -> None:
    from services.locks import configure as configure_locks

    configure_locks(settings)
    started = threading.Event()
    release = threading.Event()

    @harness.actor("report_region")
    def report_region(region: str) -> None:
        started.set()
        release.wait(20)

    lock = {"key": "report-{region}", "ttl": 10.0, "on_busy": "skip"}
    s = spec("regional", "report_region", kwargs={"region": "eu"}, lock=lock)
    harness.start()
    first = harness.fire(s)
    assert started.wait(15)
    second = harness.fire(s)
    assert harness.wait_fire(second).status == "skipped"
    [att] = attempt_rows(harness.engine, second.message_id)
    assert att.error_message.startswith("lock 'report-eu' is held by ")
    release.set()
    assert harness.wait_fire(first).status == "succeeded"


# -- text Postgres cannot store ---------------------------------------------------------


def test_outcomes_postgres_cannot_store_as_given_are_recorded_and_poison_no_batch(
    harness: Harness,
) -> None:
    """A NUL or an unpaired surrogate in an error or a result, a NaN in a result: Postgres
    refuses them as given, and one bad outcome in a batch would fail every write in it,
    again and again. Each is recorded in a form Postgres takes, and the fires around it
    finish as usual."""

    @harness.actor("nul_error", max_retries=0)
    def nul_error() -> None:
        raise ValueError("bad\x00byte and \ud800 half a pair")

    @harness.actor("odd_result")
    def odd_result(kind: str) -> Any:
        return {"nan": [float("nan")], "nul": ["a\x00b"], "half": ["\udc00"]}[kind]

    @harness.actor("fine")
    def fine(i: int) -> int:
        return i

    harness.start()
    bad = [harness.fire(spec("nul", "nul_error"))] + [
        harness.fire(spec(f"odd-{k}", "odd_result", args=(k,))) for k in ("nan", "nul", "half")
    ]
    good = [harness.fire(spec(f"fine-{i}", "fine", args=(i,))) for i in range(6)]
    rows = {f.id: harness.wait_fire(f) for f in bad + good}

    assert [rows[f.id].status for f in good] == ["succeeded"] * 6
    [err] = attempt_rows(harness.engine, bad[0].message_id)
    assert rows[bad[0].id].status == "failed"
    assert err.error_type == "ValueError"
    assert "\x00" not in err.error_message and err.error_message.startswith("bad")
    assert "byte and" in err.error_message and "half a pair" in err.error_message
    assert "\x00" not in err.traceback and "half a pair" in err.traceback
    for f in bad[1:]:
        [att] = attempt_rows(harness.engine, f.message_id)
        assert rows[f.id].status == "succeeded"
        assert att.result == {"unserializable": "list"}
