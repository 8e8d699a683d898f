"""The watchdog against real Postgres and Redis: stuck, lost (a real worker process is
SIGKILLed), overdue, never-enqueued and missed are each found, recorded as one incident,
alerted once to Slack (a local HTTP server), and resolved with one recovery message.
Plus ``cronwork incidents``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from sqlalchemy import Engine, select, update

from services.broker import sender_broker
from services.cli import main
from services.liveness import liveness_for
from services.scheduler.dispatch import Dispatcher
from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, request
from services.store.schedule_rows import sync_schedule_rows
from services.store.tables import fires, incidents, schedules
from services.timeutil import as_utc, utcnow
from services.watch.alerter import Alerter
from services.watch.fire_checks import last_fire_time
from services.watch.watchdog import Watchdog
from services.worker.broker import worker_broker
from tests.integration.alert_servers import SlackServer, slack_server_fixture  # noqa: F401
from tests.integration.conftest import DEAD_REDIS, attempt_rows, make_settings, spec
from tests.integration.worker_harness import Harness
from tests.proxy import TcpProxy
from tests.waiting import wait_for


class Dog:
    """A Watchdog with its Alerter and a Slack server, for one test."""

    def __init__(self, engine: Engine, settings: Settings, slack: SlackServer, *specs: Any):
        self.engine = engine
        self.settings = settings
        self.slack = slack
        self.specs: dict[str, ScheduleSpec] = {s.name: s for s in specs}
        sync_schedule_rows(engine, self.specs)
        self.alerter = Alerter.from_settings(settings, self.specs, lambda: engine)
        self.watchdog = Watchdog(
            engine, self.specs, self.alerter, settings, liveness_for(settings, engine)
        )
        self.fence = Fence(engine, "scheduler-1")

    def check(self, now: datetime | None = None) -> Any:
        report = self.watchdog.check(now)
        assert self.alerter.join(30)
        return report

    def incidents(self, kind: str | None = None) -> list[Any]:
        query = select(incidents).order_by(incidents.c.id)
        if kind:
            query = query.where(incidents.c.kind == kind)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def texts(self) -> list[str]:
        return [m["text"] for m in self.slack.messages]


@pytest.fixture
def dog_settings(redis_prefix: str, slack_server: SlackServer) -> Settings:
    return make_settings(
        redis_prefix,
        slack_webhook_url=slack_server.url,
        heartbeat_interval=0.2,
        lost_after=1.5,
        never_enqueued_after=60,
    )


def _set_status(engine: Engine, fire_id: int, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(fires).where(fires.c.id == fire_id).values(status=status, finished_at=utcnow())
        )


# -- last expected fire time ---------------------------------------------------------------


def test_last_fire_time_of_cron_every_and_at() -> None:
    cron = ScheduleSpec(name="c", actor="a", trigger="cron", cron="0 8 * * 1")
    before = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday
    assert last_fire_time(build_trigger(cron), before) == datetime(
        2026, 11, 23, 8, 0, tzinfo=UTC
    )  # Monday
    every = ScheduleSpec(name="e", actor="a", trigger="every", every=timedelta(seconds=15))
    assert last_fire_time(
        build_trigger(every), datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)
    ) == datetime(2026, 1, 1, tzinfo=UTC)
    at = datetime(2026, 5, 1, tzinfo=UTC)
    once = ScheduleSpec(name="o", actor="a", trigger="at", at=at)
    assert last_fire_time(build_trigger(once), at - timedelta(seconds=1)) is None
    assert last_fire_time(build_trigger(once), at + timedelta(days=3)) == at


# -- stuck -------------------------------------------------------------------------------------


def test_stuck_attempt_is_found_and_resolves_when_it_ends(
    engine: Engine, pg_url: str, dog_settings: Settings, slack_server: SlackServer
) -> None:
    release = threading.Event()
    h = Harness(engine, make_settings(dog_settings.redis_prefix), lambda: make_engine(pg_url))
    try:

        @h.actor("hangs")
        def hangs() -> None:
            release.wait(30)

        s = spec("hanging", "hangs", max_runtime=timedelta(seconds=1))
        dog = Dog(engine, dog_settings, slack_server, s)
        h.start()
        fire = h.fire(s)
        h.wait_fire(fire, ("running",))
        assert dog.check().found == set()  # not yet past max_runtime
        report = dog.check(utcnow() + timedelta(seconds=1.2))
        assert ("stuck", "hanging") in report.found
        assert not any(k == "lost" for k, _ in report.found)  # its worker is alive
        dog.check(utcnow() + timedelta(seconds=1.3))  # seen again: one incident, one message
        [inc] = dog.incidents("stuck")
        assert inc.fire_id == fire.id and inc.count == 1
        assert len(dog.texts()) == 1 and "hanging has a stuck run" in dog.texts()[0]

        release.set()
        assert h.wait_fire(fire).status == "succeeded"
        assert dog.check().resolved == [inc.id]
        assert len(dog.texts()) == 2 and "hanging recovered" in dog.texts()[1]
    finally:
        release.set()
        h.close()


# -- lost: a real worker process is killed mid-attempt -------------------------------------------


def _doomed_worker(pg_url: str, prefix: str) -> None:
    """Child process: a tracking worker with heartbeats, running a job that never ends."""
    settings = make_settings(prefix, heartbeat_interval=0.2, instance_id="doomed-worker")
    broker = worker_broker(settings, engine_factory=lambda: make_engine(pg_url))

    @dramatiq.actor(actor_name="long_job", broker=broker)
    def long_job() -> None:
        time.sleep(120)

    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    while True:
        time.sleep(1)


@pytest.fixture
def doomed(pg_url: str, redis_prefix: str) -> Iterator[multiprocessing.Process]:
    proc = multiprocessing.get_context("spawn").Process(
        target=_doomed_worker, args=(pg_url, redis_prefix), daemon=True
    )
    proc.start()
    yield proc
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)


@pytest.mark.parametrize("policy", ["resend", "abandon"])
def test_lost_attempt_of_a_killed_worker(
    engine: Engine,
    pg_url: str,
    dog_settings: Settings,
    slack_server: SlackServer,
    doomed: multiprocessing.Process,
    policy: str,
) -> None:
    s = spec("long", "long_job", on_lost=policy, max_retries=2)
    dog = Dog(engine, dog_settings, slack_server, s)
    sender = sender_broker(dog_settings)
    try:
        dispatcher = Dispatcher(sender, dog.fence)
        [fire] = dog.fence.claim([request(s, datetime(2026, 2, 1, tzinfo=UTC), "scheduled")])
        assert dispatcher.send([fire]) == 1

        def running() -> Any:
            rows = attempt_rows(engine, fire.message_id)
            return rows if rows and rows[0].status == "running" else None

        [att] = wait_for(running, timeout=30, what="the child worker to start the job")
        assert att.instance_id == "doomed-worker"
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join(10)

        assert dog.check().found == set()  # its heartbeat is still recent
        time.sleep(2.0)  # > lost_after (1.5 s)
        report = dog.check()
        assert ("lost", "long") in report.found
        [att] = attempt_rows(engine, fire.message_id)
        assert att.status == "abandoned" and att.error_type == "WorkerLost"
        assert "doomed-worker" in att.error_message
        [inc] = dog.incidents("lost")
        assert inc.fire_id == fire.id
        assert len(dog.texts()) == 1 and "long lost a run" in dog.texts()[0]
        with engine.connect() as conn:
            row = conn.execute(select(fires).where(fires.c.id == fire.id)).one()

        if policy == "abandon":
            assert report.abandoned == [fire.id] and row.status == "abandoned"
            assert dog.check().resolved == []  # nothing succeeded since
            return

        # resend: the fire is pending again, re-sent once more (not a retry: a dead worker
        # is not a failing job), so the next delivery is attempt 1; the leader's re-send
        # path sends the same message id, and a live worker finishes it.
        assert report.resent == [fire.id] and row.status == "pending"
        assert row.message["options"]["cronwork"]["resends"] == 1
        assert row.message["options"].get("retries", 0) == 0
        h = Harness(engine, make_settings(dog_settings.redis_prefix), lambda: make_engine(pg_url))
        try:

            @h.actor("long_job")
            def long_job() -> str:
                return "finished"

            h.start()
            assert dispatcher.resend_pending(0.0) == 1
            assert h.wait_fire(fire).status == "succeeded"
        finally:
            h.close()
        rows = attempt_rows(engine, fire.message_id)
        assert [(r.attempt, r.status) for r in rows] == [(0, "abandoned"), (1, "succeeded")]
        assert dog.check().resolved == [inc.id]
        assert len(dog.texts()) == 2 and "long recovered" in dog.texts()[1]
    finally:
        sender.close()


# -- overdue ----------------------------------------------------------------------------------


def test_overdue_schedule_is_found_and_resolves_on_an_outcome(
    engine: Engine, dog_settings: Settings, slack_server: SlackServer
) -> None:
    s = spec("minutely", "x", every=timedelta(minutes=1), grace=timedelta(seconds=10))
    quiet = spec("paused-one", "x", every=timedelta(minutes=1), grace=timedelta(seconds=10))
    dog = Dog(engine, dog_settings, slack_server, s, quiet)
    with engine.begin() as conn:
        conn.execute(update(schedules).where(schedules.c.name == quiet.name).values(paused=True))

    assert dog.check().found == set()  # just created: nothing was due yet
    later = utcnow() + timedelta(minutes=3)
    report = dog.check(later)
    assert report.found == {("overdue", "minutely")}  # not the paused one
    [inc] = dog.incidents("overdue")
    expected = last_fire_time(build_trigger(s), later - timedelta(seconds=10))
    assert inc.details["scheduled_for"] == expected.isoformat().replace("+00:00", "Z")
    assert len(dog.texts()) == 1 and "minutely is overdue" in dog.texts()[0]

    # The expected fire ran (here: its row ended succeeded): resolved, one recovery.
    [fire] = dog.fence.claim([request(s, expected, "scheduled")])
    _set_status(engine, fire.id, "succeeded")
    assert dog.check(later).resolved == [inc.id]
    assert len(dog.texts()) == 2 and "minutely recovered" in dog.texts()[1]


# -- never enqueued ------------------------------------------------------------------------


def test_fires_left_pending_are_alerted_until_sent(
    engine: Engine, dog_settings: Settings, slack_server: SlackServer
) -> None:
    s = spec("pending-one", "x")
    dog = Dog(engine, dog_settings, slack_server, s)
    dead = sender_broker(make_settings(dog_settings.redis_prefix, redis_url=DEAD_REDIS))
    try:
        won = dog.fence.claim([request(s, datetime(2026, 3, 1, tzinfo=UTC), "scheduled")])
        assert Dispatcher(dead, dog.fence).send(won) == 0  # Redis down: left pending
    finally:
        dead.close()
    assert dog.check().found == set()  # not pending long enough yet
    later = utcnow() + timedelta(seconds=120)
    assert dog.check(later).found == {("never_enqueued", "pending-one")}
    assert dog.check(later).found == {("never_enqueued", "pending-one")}
    assert len(dog.texts()) == 1 and "never enqueued" in dog.texts()[0]

    live = sender_broker(dog_settings)
    try:  # Redis is back: the leader's re-send gets it out
        assert Dispatcher(live, dog.fence).resend_pending(0.0) == 1
    finally:
        live.close()
    [inc] = dog.incidents("never_enqueued")
    assert dog.check(later).resolved == [inc.id]
    assert len(dog.texts()) == 2


# -- missed -----------------------------------------------------------------------------------


def test_missed_fires_are_alerted_once_and_folded(
    engine: Engine, dog_settings: Settings, slack_server: SlackServer
) -> None:
    s = spec("gappy", "x", every=timedelta(hours=1))
    dog = Dog(engine, dog_settings, slack_server, s)
    t0 = datetime(2026, 4, 1, tzinfo=UTC)
    dog.fence.claim([request(s, t0 + timedelta(hours=i), "scheduled", "missed") for i in range(3)])
    assert dog.check().found == {("missed", "gappy")}
    assert dog.check().found == set()  # the same rows are not news
    [inc] = dog.incidents("missed")
    assert "3 fire(s) missed" in inc.details["summary"] and inc.count == 1
    dog.fence.claim([request(s, t0 + timedelta(hours=5), "scheduled", "missed")])
    dog.check()
    [inc] = dog.incidents("missed")
    assert inc.count == 2 and len(dog.texts()) == 1  # folded, no second message

    [ok] = dog.fence.claim([request(s, t0 + timedelta(hours=6), "scheduled")])
    _set_status(engine, ok.id, "succeeded")
    assert dog.check().resolved == [inc.id]
    assert len(dog.texts()) == 2


# -- failed backstop + CLI ---------------------------------------------------------------------


def test_failed_fire_not_reported_by_a_worker_is_found_and_listed(
    engine: Engine,
    pg_url: str,
    dog_settings: Settings,
    slack_server: SlackServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = spec("backstop", "x")
    dog = Dog(engine, dog_settings, slack_server, s)
    [fire] = dog.fence.claim([request(s, datetime(2026, 4, 2, tzinfo=UTC), "scheduled")])
    with engine.begin() as conn:
        conn.execute(
            update(fires)
            .where(fires.c.id == fire.id)
            .values(status="failed", finished_at=utcnow(), error_type="OSError", error="disk full")
        )
    assert dog.check().found == set()  # the worker's hook gets the first go
    assert dog.check(utcnow() + timedelta(seconds=60)).found == {("failed", "backstop")}
    assert "backstop failed: OSError: disk full" in dog.texts()[0]

    monkeypatch.setenv("CRONWORK_DATABASE_URL", pg_url)
    monkeypatch.setenv("CRONWORK_SLACK_WEBHOOK_URL", slack_server.url)
    assert main(["incidents", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["kind"], listed["schedule"], listed["status"]) == ("failed", "backstop", "open")
    assert listed["fire_id"] == fire.id and listed["opened_at"].endswith("Z")
    assert main(["incidents"]) == 0
    out = capsys.readouterr().out
    assert "backstop" in out and "failed" in out and slack_server.secret not in out
    with engine.begin() as conn:
        conn.execute(update(incidents).values(resolved_at=as_utc(datetime.now(UTC))))
    assert main(["incidents"]) == 0
    assert "no open incidents" in capsys.readouterr().out
    assert main(["incidents", "--all", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_a_database_outage_is_one_line_for_the_watchdog_not_one_per_check(
    pg_url: str, dog_settings: Settings, slack_server: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    """0.1.0 logged each check's traceback on every pass while Postgres was away."""
    proxy = TcpProxy("127.0.0.1", 5432)
    engine = make_engine(proxy.url_for(pg_url, 5432))
    try:
        dog = Dog(engine, dog_settings, slack_server, spec("tick", "x"))
        caplog.set_level(logging.INFO)
        with proxy.outage():
            for _ in range(3):
                report = dog.watchdog.check()
                assert len(report.failed_steps) == len(dog.watchdog.checks)
        assert dog.watchdog.check().failed_steps == []
    finally:
        proxy.close()
        engine.dispose()
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in logged] == ["database unreachable"]
    assert not any(r.exc_info for r in caplog.records)
    assert any("database is back" in r.getMessage() for r in caplog.records)
