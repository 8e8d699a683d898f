"""Tracked ad-hoc runs (services/adhoc.py) against real Postgres and Redis.

The row is written before the message is sent; a key runs the work once however many
callers send it at once; a worker tracks an ad-hoc run like any fire.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from sqlalchemy import Engine

from services import adhoc
from services.adhoc import AdhocRun, UnknownActor, adhoc_schedule, send_tracked
from services.broker import sender_broker
from services.scheduler.dispatch import Dispatcher
from services.schedules.spec import DEFAULT_GRACE
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence
from services.store.watch_queries import unfinished_fires
from services.timeutil import utcnow
from services.vocabulary import FireKind, FireStatus
from services.watch.alerter import FailureInfo
from services.watch.runs import UnfinishedFires
from services.worker.alert_hook import install
from tests.integration.alert_servers import SlackServer, slack_server_fixture  # noqa: F401
from tests.integration.conftest import DEAD_REDIS, attempt_rows, fire_rows, make_settings
from tests.integration.test_watchdog import Dog
from tests.integration.test_watchdog import dog_settings as dog_settings  # a fixture
from tests.integration.worker_harness import (  # noqa: F401 (fixtures)
    Harness,
    harness_factory_fixture,
    harness_fixture,
)
from tests.waiting import wait_for

FINAL = ("succeeded", "failed", "timed_out", "skipped")


def wait_status(engine: Engine, fire_id: int, statuses: tuple[str, ...] = FINAL) -> Any:
    def check() -> Any:
        rows = [r for r in fire_rows(engine) if r.id == fire_id]
        return rows[0] if rows and rows[0].status in statuses else None

    return wait_for(check, timeout=20, what=f"fire {fire_id} to become {statuses}")


@pytest.fixture
def dead_broker(redis_prefix: str) -> Iterator[dramatiq.Broker]:
    """A sender broker whose Redis is not there: every send fails."""
    broker = sender_broker(make_settings(redis_prefix, redis_url=DEAD_REDIS))
    yield broker
    broker.close()


def test_the_row_is_written_before_the_send_and_the_leader_resends_it(
    harness: Harness, dead_broker: dramatiq.Broker
) -> None:
    ran: list[str] = []

    @harness.actor("invoice")
    def invoice(account: str, *, month: str) -> str:
        ran.append(f"{account} {month}")
        return "sent"

    dramatiq.actor(actor_name="invoice", broker=dead_broker)(lambda account, month: None)
    run = send_tracked(
        "invoice", "acme", month="2026-11", key="invoice-2026-11", broker=dead_broker,
        engine=harness.engine,
    )  # fmt: skip

    assert not run.duplicate and run.status == FireStatus.PENDING and not run.enqueued
    [row] = fire_rows(harness.engine)
    assert (row.id, row.message_id, row.status) == (run.fire_id, run.message_id, "pending")
    assert (row.kind, row.actor, row.idempotency_key) == ("adhoc", "invoice", "invoice-2026-11")
    assert row.schedule == "adhoc:invoice"
    assert row.message["args"] == ["acme"] and row.message["kwargs"] == {"month": "2026-11"}

    # The leader's re-send of pending fires sends it from the row, with its message id.
    harness.start()
    resent = Dispatcher(harness.broker, Fence(harness.engine, "leader")).resend_pending(
        older_than=0, now=datetime.now(UTC) + timedelta(seconds=1)
    )
    assert resent == 1
    done = wait_status(harness.engine, run.fire_id)
    assert done.status == "succeeded" and done.attempts == 1
    harness.drain()
    assert ran == ["acme 2026-11"]
    [att] = attempt_rows(harness.engine, run.message_id)
    assert (att.attempt, att.status, att.schedule, att.result) == (
        0,
        "succeeded",
        "adhoc:invoice",
        "sent",
    )


def send_at_once(actor: Any, key: str, callers: int, engine: Engine) -> list[AdhocRun]:
    """``callers`` threads send ``actor`` with ``key``, released together."""
    start = threading.Barrier(callers)
    runs: list[AdhocRun] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        start.wait()
        run = send_tracked(actor, n, key=key, engine=engine)
        with lock:
            runs.append(run)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs) == callers
    return runs


def test_concurrent_sends_of_one_key_run_once(harness: Harness) -> None:
    @harness.actor("once")
    def once(n: int) -> None:
        pass

    for round_ in range(3):
        key = f"once-{round_}"
        runs = send_at_once(once, key, 6, harness.engine)
        [winner] = [r for r in runs if not r.duplicate]
        assert winner.enqueued
        rows = [r for r in fire_rows(harness.engine) if r.idempotency_key == key]
        assert [r.id for r in rows] == [winner.fire_id]
        for dup in (r for r in runs if r.duplicate):
            assert (dup.fire_id, dup.message_id, dup.key) == (
                winner.fire_id,
                rows[0].message_id,
                key,
            )
            assert dup.status in set(FireStatus)
    # Later: the duplicate names the holder as it stands now.
    harness.start()
    first = next(r for r in fire_rows(harness.engine) if r.idempotency_key == "once-0")
    wait_status(harness.engine, first.id)
    again = send_tracked(once, 1, key="once-0", engine=harness.engine)
    assert (again.duplicate, again.fire_id, again.status) == (True, first.id, "succeeded")
    assert len(fire_rows(harness.engine)) == 3


def test_a_worker_retries_an_adhoc_run_and_records_every_attempt(harness: Harness) -> None:
    @harness.actor("flaky", max_retries=2, min_backoff=100, max_backoff=200)
    def flaky() -> None:
        raise RuntimeError("no invoice server")

    harness.start()
    run = send_tracked("flaky", broker=harness.broker, engine=harness.engine)
    row = wait_status(harness.engine, run.fire_id, ("failed", "succeeded", "timed_out"))

    assert (row.status, row.kind, row.attempts, row.error) == (
        "failed",
        "adhoc",
        3,
        "no invoice server",
    )
    rows = attempt_rows(harness.engine, run.message_id)
    assert [(r.attempt, r.status) for r in rows] == [
        (0, "retrying"),
        (1, "retrying"),
        (2, "failed"),
    ]
    assert {r.error_type for r in rows} == {"RuntimeError"}
    # The actor's options went into the message: a re-send from the row needs no actor.
    assert row.message["options"]["max_retries"] == 2
    assert row.message["options"]["cronwork"]["kind"] == FireKind.ADHOC


def test_runs_of_one_actor_in_the_same_microsecond_do_not_collide(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    @harness.actor("burst")
    def burst(n: int) -> None:
        pass

    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(adhoc, "utcnow", lambda: at)
    made = [send_tracked(burst, n, engine=harness.engine) for n in range(3)]

    assert len({r.fire_id for r in made}) == 3 and not any(r.duplicate for r in made)
    rows = fire_rows(harness.engine)
    assert [r.scheduled_for for r in rows] == [at + timedelta(microseconds=i) for i in range(3)]
    assert [r.message["args"] for r in rows] == [[0], [1], [2]]
    # The message carries the time of its own row.
    assert [r.message["options"]["cronwork"]["scheduled_for"] for r in rows][1].endswith(".000001Z")


def test_refusals_write_nothing(harness: Harness) -> None:
    @harness.actor("plain")
    def plain(x: Any) -> None:
        pass

    with pytest.raises(UnknownActor, match=r"no actor named 'nope'.*plain"):
        send_tracked("nope", broker=harness.broker, engine=harness.engine)
    with pytest.raises(ValueError, match="must be JSON"):
        send_tracked(plain, object(), engine=harness.engine)
    with pytest.raises(ValueError, match="key"):
        send_tracked(plain, 1, key="", engine=harness.engine)
    assert fire_rows(harness.engine) == []


def test_long_actor_names_fit_the_schedule_column(settings: Settings) -> None:
    long = "a" * 120
    name = adhoc_schedule(long)
    assert len(name) == 64 and name.startswith("adhoc:aaa")
    assert adhoc_schedule(long + "b") != name
    assert adhoc_schedule("short") == "adhoc:short"


def test_an_adhoc_failure_alert_names_its_actor_and_key() -> None:
    info = FailureInfo(
        schedule="adhoc:invoice",
        fire_id=12,
        message_id="m",
        actor="invoice",
        scheduled_for=None,
        attempt=3,
        max_attempts=3,
        error_type="RuntimeError",
        error="boom",
        duration_ms=5,
        instance_id="w",
        status="failed",
        key="invoice-2026-11",
    )
    assert info.subject() == "fire 12 attempt 3 of invoice key invoice-2026-11"
    assert info.details()["key"] == "invoice-2026-11"


def test_an_adhoc_run_is_unfinished_only_past_its_own_time_limit(harness: Harness) -> None:
    """No schedule gives an ad-hoc run its grace: its message's time limit does."""

    @harness.actor("long", time_limit=600_000, max_backoff=60_000)
    def long() -> None:
        pass

    run = send_tracked(long, engine=harness.engine)
    checks = UnfinishedFires(harness.engine, {}, lambda *a, **kw: None)
    [fire] = unfinished_fires(harness.engine, utcnow() + timedelta(hours=1))
    assert fire.id == run.fire_id
    assert checks.grace(fire) == DEFAULT_GRACE + timedelta(minutes=10)


def test_an_adhoc_run_past_its_actors_max_runtime_is_stuck_and_its_failure_alerted(
    engine: Engine, pg_url: str, dog_settings: Settings, slack_server: SlackServer
) -> None:
    """The watchdog and the alerts see ad-hoc runs: stuck by the actor's ``max_runtime``,
    a final failure alerted naming the actor and the key."""
    release = threading.Event()
    h = Harness(engine, make_settings(dog_settings.redis_prefix), lambda: make_engine(pg_url))
    try:

        @h.actor("hangs", max_runtime=1000, max_retries=0)
        def hangs() -> None:
            release.wait(30)
            raise RuntimeError("gave up")

        dog = Dog(engine, dog_settings, slack_server)
        install(h.broker, dog_settings, {}, lambda: engine, "worker-1")
        h.start()
        run = send_tracked(hangs, key="nightly-export", broker=h.broker, engine=engine)
        wait_status(engine, run.fire_id, ("running",))
        assert dog.check().found == set()  # not yet past max_runtime
        report = dog.check(utcnow() + timedelta(seconds=1.5))
        assert report.found == {("stuck", "adhoc:hangs")}
        [stuck] = dog.incidents("stuck")
        assert stuck.fire_id == run.fire_id and stuck.details["actor"] == "hangs"

        release.set()
        assert wait_status(engine, run.fire_id).status == "failed"
        failed = wait_for(lambda: dog.incidents("failed"), what="the failure's incident")
        assert failed[0].subject == f"fire {run.fire_id} attempt 1 of hangs key nightly-export"
        assert failed[0].schedule == "adhoc:hangs"
        alert = wait_for(
            lambda: [m for m in slack_server.messages if "hangs failed" in m["text"]],
            what="its Slack alert",
        )
        fields = json.dumps(alert[0]["blocks"])
        assert "*Actor*\\n`hangs`" in fields and "*Key*\\n`nightly-export`" in fields
    finally:
        release.set()
        h.close()


def test_an_adhoc_run_is_stopped_by_its_actors_time_limit(harness: Harness) -> None:
    @harness.actor("too_slow", time_limit=200, max_retries=0)
    def too_slow() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.02)

    harness.start()
    run = send_tracked(too_slow, engine=harness.engine)
    row = wait_status(harness.engine, run.fire_id, ("timed_out", "failed", "succeeded"))
    assert (row.status, row.attempts, row.message["options"]["time_limit"]) == (
        "timed_out",
        1,
        200,
    )
    [att] = attempt_rows(harness.engine, run.message_id)
    assert att.status == "timed_out"
