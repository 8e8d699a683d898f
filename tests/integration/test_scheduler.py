"""FencedScheduler, sync_jobs and SchedulerService on real Postgres and Redis.

Each scheduler gets an engine of its own (as a separate process would) and the
shared APScheduler jobstore table that the migration created.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
import redis
from sqlalchemy import Engine

from services.broker import sender_broker
from services.constants import LEASE_KEY
from services.scheduler.dispatch import Dispatcher
from services.scheduler.fenced import FencedScheduler, FireHandler
from services.scheduler.jobstore import ScheduleJobStore
from services.scheduler.lease import RedisLease
from services.scheduler.service import SchedulerService
from services.scheduler.sync import SyncReport, sync_jobs
from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, FireRequest, request
from tests.integration.conftest import fire_rows, make_settings, spec
from tests.waiting import wait_for


class Rig:
    """Builds FencedSchedulers sharing one database and broker; shuts them all down."""

    def __init__(self, pg_url: str, broker: dramatiq.Broker) -> None:
        self.pg_url = pg_url
        self.broker = broker
        self.schedulers: list[FencedScheduler] = []

    def scheduler(
        self,
        specs: dict[str, ScheduleSpec],
        *,
        instance_id: str = "sched-1",
        may_fire: Callable[[], bool] = lambda: True,
    ) -> FencedScheduler:
        engine = make_engine(self.pg_url)  # the jobstore disposes it at shutdown
        fence = Fence(engine, instance_id)
        triggers = {name: build_trigger(s) for name, s in specs.items()}
        handler = FireHandler(engine, fence, Dispatcher(self.broker, fence), specs, triggers)
        sched = FencedScheduler(handler, ScheduleJobStore(engine, triggers), may_fire=may_fire)
        self.schedulers.append(sched)
        return sched

    def started(self, specs: dict[str, ScheduleSpec], **kw: Any) -> FencedScheduler:
        """A scheduler started paused with its jobs synced (as a new leader does)."""
        sched = self.scheduler(specs, **kw)
        sched.start(paused=True)
        sync(sched, specs)
        return sched

    def shutdown(self, sched: FencedScheduler) -> None:
        if sched.running:
            sched.shutdown(wait=False)

    def close(self) -> None:
        for sched in self.schedulers:
            self.shutdown(sched)


def sync(sched: FencedScheduler, specs: dict[str, ScheduleSpec]) -> SyncReport:
    return sync_jobs(sched.store, specs, {n: build_trigger(s) for n, s in specs.items()})


@pytest.fixture
def rig(pg_url: str, send_broker: dramatiq.Broker) -> Iterator[Rig]:
    r = Rig(pg_url, send_broker)
    yield r
    r.close()


def by_name(*specs: ScheduleSpec) -> dict[str, ScheduleSpec]:
    return {s.name: s for s in specs}


def queued_count(client: redis.Redis, settings: Settings, queue: str = "default") -> int:
    return int(client.llen(f"{settings.redis_prefix}-dramatiq:{queue}"))


def assert_consecutive(times: list[datetime], step: timedelta) -> None:
    assert len(set(times)) == len(times), f"duplicate times: {times}"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == step for g in gaps), f"gaps in {times}"


def aligned_past(s: ScheduleSpec, seconds_ago: float) -> datetime:
    """The schedule's first fire time at or after ``seconds_ago`` seconds ago."""
    t = build_trigger(s).get_next_fire_time(
        None, datetime.now(UTC) - timedelta(seconds=seconds_ago)
    )
    assert t is not None
    return t


# -- (a) sync_jobs -------------------------------------------------------------------


def test_sync_adds_keeps_reschedules_and_removes(rig: Rig) -> None:
    hourly = spec("hourly", trigger="cron", cron="0 * * * *", every=None)
    daily = spec("daily", trigger="cron", cron="30 2 * * *", every=None, timezone="Europe/Berlin")
    ticker = spec("ticker", every=timedelta(minutes=5))
    specs = by_name(hourly, daily, ticker)

    first = rig.scheduler(specs)
    first.start(paused=True)
    report = sync(first, specs)
    assert sorted(report.added) == ["daily", "hourly", "ticker"]
    now = datetime.now(UTC)
    for name in specs:
        job = first.get_job(name)
        assert job is not None and job.next_run_time >= now - timedelta(seconds=1)

    # The job came due an hour ago and nobody fired it (downtime).
    overdue = aligned_past(hourly, 3600)
    first.modify_job("hourly", next_run_time=overdue)
    rig.shutdown(first)

    # A new leader syncs the same file: nothing recomputed, the overdue run stays due.
    second = rig.started(specs)
    job = second.get_job("hourly")
    assert job is not None and job.next_run_time == overdue
    # A change that does not touch *when* it fires keeps it too.
    changed_retries = by_name(
        spec("hourly", trigger="cron", cron="0 * * * *", every=None, max_retries=9), daily, ticker
    )
    report = sync(second, changed_retries)
    assert sorted(report.kept) == ["daily", "hourly", "ticker"]
    job = second.get_job("hourly")
    assert job is not None and job.next_run_time == overdue
    rig.shutdown(second)

    # Changing the cron or the zone reschedules; a deleted schedule is removed.
    new_specs = by_name(
        spec("hourly", trigger="cron", cron="15 * * * *", every=None),
        spec("daily", trigger="cron", cron="30 2 * * *", every=None, timezone="America/New_York"),
    )
    third = rig.scheduler(new_specs)
    third.start(paused=True)
    report = sync(third, new_specs)
    assert sorted(report.rescheduled) == ["daily", "hourly"]
    assert report.removed == ["ticker"]
    assert third.get_job("ticker") is None
    now = datetime.now(UTC)
    hourly_job = third.get_job("hourly")
    assert hourly_job is not None
    assert hourly_job.next_run_time >= now - timedelta(seconds=1)
    assert hourly_job.next_run_time.astimezone(UTC).minute == 15
    daily_job = third.get_job("daily")
    assert daily_job is not None
    local = daily_job.next_run_time.astimezone(build_trigger(new_specs["daily"]).timezone)
    assert (local.hour, local.minute) == (2, 30)
    assert str(local.tzinfo) in ("America/New_York", "EST", "EDT")

    # And a re-sync of the new file keeps everything.
    assert sorted(sync(third, new_specs).kept) == ["daily", "hourly"]


# -- (b) one scheduler -----------------------------------------------------------------


def test_every_second_fires_each_second_once(
    rig: Rig, engine: Engine, redis_client: redis.Redis, settings: Settings
) -> None:
    s = spec("tick", catchup="all")
    sched = rig.started(by_name(s))
    started = datetime.now(UTC)
    sched.resume()
    time.sleep(4.2)
    rig.shutdown(sched)

    rows = fire_rows(engine, "tick")
    times = [r.scheduled_for for r in rows]
    assert 3 <= len(rows) <= 6, times
    assert times[0] >= started - timedelta(seconds=1)
    assert_consecutive(times, timedelta(seconds=1))
    assert {r.status for r in rows} == {"enqueued"}
    assert {r.kind for r in rows} == {"scheduled"}
    assert queued_count(redis_client, settings) == len(rows)


# -- (c) split brain -----------------------------------------------------------------


def test_two_schedulers_on_one_jobstore_still_fire_each_time_once(
    rig: Rig, engine: Engine, redis_client: redis.Redis, settings: Settings
) -> None:
    s = spec("tick", catchup="all")
    specs = by_name(s)
    a = rig.started(specs, instance_id="sched-a")
    b = rig.started(specs, instance_id="sched-b")
    a.resume()
    b.resume()
    time.sleep(4.2)
    rig.shutdown(a)
    rig.shutdown(b)

    rows = fire_rows(engine, "tick")
    times = [r.scheduled_for for r in rows]
    assert 3 <= len(rows) <= 6, times
    assert_consecutive(times, timedelta(seconds=1))
    assert {r.status for r in rows} == {"enqueued"}
    # Each time was sent once, by whichever scheduler won its row.
    assert queued_count(redis_client, settings) == len(rows)
    assert {r.fired_by for r in rows} <= {"sched-a", "sched-b"}


# -- (d) catch-up after downtime -------------------------------------------------------


def _catch_up(rig: Rig, s: ScheduleSpec, seconds_ago: float) -> tuple[datetime, datetime]:
    """Run one catch-up of ``s`` whose next run time is ``seconds_ago`` in the past."""
    sched = rig.started(by_name(s))
    overdue = aligned_past(s, seconds_ago)
    sched.modify_job(s.name, next_run_time=overdue)
    resumed = datetime.now(UTC)
    sched.resume()

    def caught_up() -> bool:
        job = sched.get_job(s.name)
        return job is not None and job.next_run_time > resumed

    wait_for(caught_up, timeout=5, what="the catch-up tick")
    rig.shutdown(sched)
    return overdue, resumed


def test_catchup_all_fires_every_missed_time(rig: Rig, engine: Engine) -> None:
    s = spec("five", every=timedelta(seconds=5), catchup="all")
    overdue, resumed = _catch_up(rig, s, 30)
    rows = [r for r in fire_rows(engine, "five") if r.scheduled_for <= resumed]
    times = [r.scheduled_for for r in rows]
    assert times[0] == overdue
    assert 6 <= len(rows) <= 7, times
    assert_consecutive(times, timedelta(seconds=5))
    assert {r.status for r in rows} == {"enqueued"}
    # Older than the on-time grace: catch-up; the last one or two were on time.
    assert [r.kind for r in rows[:5]] == ["catchup"] * 5


def test_catchup_latest_fires_only_the_newest(rig: Rig, engine: Engine) -> None:
    s = spec("five", every=timedelta(seconds=5), catchup="latest")
    overdue, resumed = _catch_up(rig, s, 30)
    rows = [r for r in fire_rows(engine, "five") if r.scheduled_for <= resumed]
    times = [r.scheduled_for for r in rows]
    assert times[0] == overdue
    assert 6 <= len(rows) <= 7, times
    assert_consecutive(times, timedelta(seconds=5))
    assert [r.status for r in rows] == ["skipped"] * (len(rows) - 1) + ["enqueued"]
    for r in rows[:-1]:
        assert r.kind == "catchup"
        assert "latest" in r.error
        assert r.finished_at is not None


def test_catchup_window_records_older_fires_as_missed(rig: Rig, engine: Engine) -> None:
    s = spec(
        "five", every=timedelta(seconds=5), catchup="all", catchup_window=timedelta(seconds=10)
    )
    overdue, resumed = _catch_up(rig, s, 30)
    rows = [r for r in fire_rows(engine, "five") if r.scheduled_for <= resumed]
    times = [r.scheduled_for for r in rows]
    assert times[0] == overdue
    assert 6 <= len(rows) <= 7, times
    assert_consecutive(times, timedelta(seconds=5))
    statuses = [r.status for r in rows]
    missed = [r for r in rows if r.status == "missed"]
    # Missed first (older than the window), then everything inside the window fired.
    assert statuses == ["missed"] * len(missed) + ["enqueued"] * (len(rows) - len(missed))
    assert 3 <= len(missed) <= 5, statuses
    for r in missed:
        assert r.scheduled_for < resumed - timedelta(seconds=10)
        assert "catch-up window" in r.error
    for r in rows[len(missed) :]:
        assert r.scheduled_for >= resumed - timedelta(seconds=11)


# -- (e) a database error in a tick ------------------------------------------------------


def test_a_failed_claim_does_not_advance_or_kill_the_loop(
    rig: Rig, engine: Engine, redis_client: redis.Redis, settings: Settings
) -> None:
    s = spec("tick", catchup="all")
    sched = rig.started(by_name(s))
    fence = sched.handler.fence
    real_claim = fence.claim
    failed: list[list[FireRequest]] = []

    def flaky_claim(requests: list[FireRequest]) -> Any:
        if not failed:
            failed.append(requests)
            raise RuntimeError("database went away")
        return real_claim(requests)

    fence.claim = flaky_claim  # type: ignore[method-assign]
    sched.resume()
    wait_for(lambda: failed, timeout=5, what="the failing claim")
    lost = failed[0][0].scheduled_for

    def fired() -> bool:
        return any(r.scheduled_for == lost for r in fire_rows(engine, "tick"))

    wait_for(fired, timeout=5, what=f"the fire at {lost} on a later tick")
    time.sleep(1.2)  # and the loop keeps going after it
    assert sched._thread.is_alive()
    rig.shutdown(sched)

    rows = fire_rows(engine, "tick")
    times = [r.scheduled_for for r in rows]
    assert times[0] == lost
    assert len(rows) >= 2
    assert_consecutive(times, timedelta(seconds=1))
    assert {r.status for r in rows} == {"enqueued"}
    assert queued_count(redis_client, settings) == len(rows)


def test_a_paused_or_stopping_scheduler_never_fires(rig: Rig, engine: Engine) -> None:
    s = spec("tick", catchup="all")
    sched = rig.started(by_name(s))
    overdue = aligned_past(s, 10)
    sched.modify_job("tick", next_run_time=overdue)
    sched.wakeup()
    time.sleep(0.3)
    # shutdown() wakes the loop once more after setting STATE_STOPPED: no fire from it.
    rig.shutdown(sched)
    assert fire_rows(engine, "tick") == []
    after = rig.started(by_name(s))
    job = after.get_job("tick")
    assert job is not None and job.next_run_time == overdue


def test_no_fires_without_the_lease_and_catch_up_once_it_is_back(rig: Rig, engine: Engine) -> None:
    allowed = threading.Event()
    s = spec("tick", catchup="all")
    sched = rig.started(by_name(s), may_fire=allowed.is_set)
    sched.resume()
    time.sleep(1.5)
    assert fire_rows(engine, "tick") == []
    allowed_at = datetime.now(UTC)
    allowed.set()
    wait_for(lambda: len(fire_rows(engine, "tick")) >= 2, timeout=5, what="fires")
    rig.shutdown(sched)
    rows = fire_rows(engine, "tick")
    assert_consecutive([r.scheduled_for for r in rows], timedelta(seconds=1))
    # The times that came due while it could not fire were fired late, not dropped.
    assert rows[0].scheduled_for < allowed_at


# -- (f) SchedulerService with a lease ---------------------------------------------------


def test_one_service_leads_and_the_other_takes_over_on_stop(
    pg_url: str, engine: Engine, redis_prefix: str, redis_client: redis.Redis
) -> None:
    s = spec("tick", catchup="all")
    specs = by_name(s)
    key = f"{redis_prefix}:{LEASE_KEY}"
    services: dict[str, SchedulerService] = {}
    threads: dict[str, threading.Thread] = {}
    cleanup: list[Callable[[], None]] = []
    try:
        for name in ("svc-a", "svc-b"):
            settings = make_settings(redis_prefix, instance_id=name, lease_ttl=3.0)
            eng = make_engine(pg_url)
            broker = sender_broker(settings)
            cleanup += [eng.dispose, broker.close]
            lease = RedisLease(redis_client, key, settings.lease_ttl, name)
            services[name] = SchedulerService(settings, eng, broker, specs, lease)
            threads[name] = threading.Thread(target=services[name].run, name=name, daemon=True)
        for t in threads.values():
            t.start()

        def leaders() -> list[str]:
            return [n for n, svc in services.items() if svc.leading]

        [leader] = wait_for(leaders, timeout=5, what="a leader")
        # Only one leads, and it stays that way.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert leaders() == [leader]
            time.sleep(0.05)
        holder = RedisLease(redis_client, key, 1, "observer").holder()
        assert holder is not None and holder["instance_id"] == leader
        wait_for(lambda: fire_rows(engine, "tick"), timeout=5, what="the first fire")

        other = "svc-b" if leader == "svc-a" else "svc-a"
        services[leader].stop()
        stopped = time.monotonic()
        threads[leader].join(timeout=10)
        assert not threads[leader].is_alive()
        assert not services[leader].leading
        wait_for(lambda: leaders() == [other], timeout=3, what="the standby to take over")
        assert time.monotonic() - stopped < 1.5
        holder = RedisLease(redis_client, key, 1, "observer").holder()
        assert holder is not None and holder["instance_id"] == other

        # Fires go on under the new leader with no gap and no duplicate.
        before = len(fire_rows(engine, "tick"))
        wait_for(lambda: len(fire_rows(engine, "tick")) >= before + 2, timeout=5, what="fires")
    finally:
        for svc in services.values():
            svc.stop()
        for t in threads.values():
            t.join(timeout=10)
        for fn in cleanup:
            fn()
    assert redis_client.get(key) is None  # the last leader released the lease too
    rows = fire_rows(engine, "tick")
    assert_consecutive([r.scheduled_for for r in rows], timedelta(seconds=1))
    assert {r.fired_by for r in rows} == {"svc-a", "svc-b"}
    assert all(r.status in ("enqueued", "pending") for r in rows)


def test_the_leader_resends_fires_left_pending(
    pg_url: str, engine: Engine, redis_prefix: str, redis_client: redis.Redis
) -> None:
    s = spec("hourly", every=timedelta(hours=1))
    # A fire that a leader wrote but never sent (it crashed in between).
    [left] = Fence(engine, "crashed").claim(
        [request(s, datetime(2026, 1, 5, tzinfo=UTC), "scheduled")]
    )
    settings = make_settings(redis_prefix, instance_id="svc-a", resend_after=0.2)
    eng = make_engine(pg_url)
    broker = sender_broker(settings)
    lease = RedisLease(redis_client, f"{redis_prefix}:{LEASE_KEY}", settings.lease_ttl, "svc-a")
    svc = SchedulerService(settings, eng, broker, by_name(s), lease)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: fire_rows(engine, "hourly")[0].status == "enqueued",
            timeout=5,
            what="the pending fire to be re-sent",
        )
    finally:
        svc.stop()
        thread.join(timeout=10)
        broker.close()
        eng.dispose()
    [row] = fire_rows(engine, "hourly")
    assert row.message_id == left.message_id
    assert queued_count(redis_client, settings) == 1
