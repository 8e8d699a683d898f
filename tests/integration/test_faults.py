"""Fault tests: a leading SchedulerService while its Postgres or Redis goes away and comes back.

Tests that kill or restart a server start a throwaway one of their own from the
installed binaries (never the shared servers on 5432/6379): Postgres via
initdb/pg_ctl as the ``postgres`` OS user (it refuses to run as root), Redis via
``redis-server`` without persistence. Each runs on a free port on 127.0.0.1 in a
temporary directory that is removed afterwards, whatever happens.

The service is built as ``cronwork scheduler`` builds it (services.cli.processes.scheduler_service:
RedisLease with the CLI's socket timeout) and runs ``run()`` on a thread.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import dramatiq
import pytest
import redis
from sqlalchemy import Engine

from services.broker import sender_broker
from services.cli.processes import scheduler_service
from services.constants import LEASE_KEY
from services.scheduler.dispatch import Dispatcher
from services.scheduler.recovery import Recovery
from services.scheduler.service import SchedulerService
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, request
from services.store.migrate import upgrade
from tests.integration.conftest import attempt_rows, fire_rows, make_settings, spec
from tests.integration.worker_harness import Harness
from tests.servers import (  # noqa: F401 (fixtures)
    ThrowawayPostgres,
    ThrowawayRedis,
    free_port,
    throwaway_pg_fixture,
    throwaway_redis_fixture,
)
from tests.waiting import wait_for

ONE_SECOND = timedelta(seconds=1)
#: How long a server stays down in these tests: longer than the lease TTL below.
DOWN_SECONDS = 3.0
#: Lease TTL of the Redis-restart test (renewed every TTL/3).
SHORT_TTL = 1.5


# -- helpers -----------------------------------------------------------------------------


def by_name(*specs: ScheduleSpec) -> dict[str, ScheduleSpec]:
    return {s.name: s for s in specs}


@contextmanager
def running_service(
    settings: Settings, database_url: str, specs: dict[str, ScheduleSpec]
) -> Iterator[tuple[SchedulerService, threading.Thread]]:
    """A SchedulerService built as ``cronwork scheduler`` builds it, run() on a thread."""
    engine = make_engine(database_url)
    broker = sender_broker(settings)
    svc = scheduler_service(settings, broker, specs, engine)
    thread = threading.Thread(target=svc.run, name=settings.instance_id, daemon=True)
    thread.start()
    try:
        yield svc, thread
    finally:
        svc.stop()
        thread.join(timeout=30)
        broker.close()
        engine.dispose()
    assert not thread.is_alive(), "the service did not stop"


def gaps(times: list[datetime], step: timedelta) -> list[tuple[datetime, datetime]]:
    return [(a, b) for a, b in itertools.pairwise(times) if b - a != step]


def assert_consecutive(times: list[datetime]) -> None:
    assert len(times) == len(set(times)), f"duplicate scheduled times: {times}"
    assert not gaps(times, ONE_SECOND), f"gaps in the fires: {gaps(times, ONE_SECOND)}"


def queued_message_ids(client: redis.Redis, prefix: str, queue: str = "default") -> list[str]:
    """Dramatiq message ids (not Redis ones) of the messages waiting in ``queue``."""
    raw = client.hvals(f"{prefix}-dramatiq:{queue}.msgs")
    return [dramatiq.Message.decode(cast(bytes, v)).message_id for v in raw]


def firing_thread_alive(svc: SchedulerService) -> bool:
    sched = svc.scheduler
    thread = getattr(sched, "_thread", None)
    return sched is not None and thread is not None and thread.is_alive()


# -- 1. Postgres restarts under a leading scheduler ------------------------------------------


def test_postgres_restart_under_a_leader_loses_no_fire(
    throwaway_pg: ThrowawayPostgres, redis_prefix: str, redis_client: redis.Redis
) -> None:
    upgrade(throwaway_pg.url)
    s = spec("tick", catchup="all")
    settings = make_settings(
        redis_prefix,
        instance_id="svc-pg",
        database_url=throwaway_pg.url,
        lease_ttl=3.0,
        resend_after=1.0,
    )
    observer = make_engine(throwaway_pg.url)
    try:
        with running_service(settings, throwaway_pg.url, by_name(s)) as (svc, _):
            wait_for(lambda: len(fire_rows(observer, "tick")) >= 3, timeout=15, what="3 fires")
            assert svc.leading

            throwaway_pg.stop("fast")
            down_at = datetime.now(UTC)
            observer.dispose()  # its pooled connections died with the server
            down_until = time.monotonic() + DOWN_SECONDS
            # While the database is away both loops keep ticking: no wedged or dead thread
            # for a liveness probe to find (stepping down and standing by would be fine).
            while time.monotonic() < down_until:
                ok, why = svc.health(max_silence=2.5)
                assert ok, f"unhealthy while Postgres is down: {why}"
                time.sleep(0.1)
            up_at = datetime.now(UTC)  # no write can land before this: the server is down
            throwaway_pg.start()

            def recovered() -> bool:
                rows = fire_rows(observer, "tick")
                return (
                    bool(rows)
                    and rows[-1].scheduled_for >= up_at + 2 * ONE_SECOND
                    and all(r.status == "enqueued" for r in rows)
                )

            wait_for(recovered, timeout=20, what="fires after the restart, all enqueued")
            ok, why = svc.health(max_silence=2.5)
            assert ok, why
            assert svc.leading and firing_thread_alive(svc)
            lease_changes = svc.lease_changes
        rows = fire_rows(observer, "tick")
    finally:
        observer.dispose()

    times = [r.scheduled_for for r in rows]
    # Every second from the first fire to the last is there, once: the seconds that came
    # due while Postgres was down were fired late, not dropped.
    assert_consecutive(times)
    assert times[-1] - times[0] >= timedelta(seconds=DOWN_SECONDS + 4)
    assert {r.status for r in rows} == {"enqueued"}
    # The seconds due while the server was down could only be written once it was back.
    due_while_down = [r for r in rows if down_at <= r.scheduled_for < up_at]
    assert len(due_while_down) >= DOWN_SECONDS - 1, "no fire was caught up after the outage"
    assert all(r.created_at >= up_at for r in due_while_down)
    # Each row's message reached the broker (re-sends may duplicate one; the worker dedups).
    assert {r.message_id for r in rows} <= set(queued_message_ids(redis_client, redis_prefix))
    assert lease_changes >= 1


# -- 2. Redis restarts under a leading scheduler -------------------------------------------


def _freeze_just_before_a_fire(
    server: ThrowawayRedis, engine: Engine
) -> tuple[datetime, float, datetime]:
    """SIGSTOP Redis just before a fire second; once that fire's row is fenced, return
    when Redis froze (wall clock and monotonic) and the fire's scheduled time.

    A frozen Redis accepts connections but never answers, so neither a lease renewal
    that happens to be in flight nor the send of that fire can fail (and make the leader
    step down) before the fire is fenced: the leader fires on its own clock's idea of the
    lease, not on Redis'. The test then SIGKILLs the frozen server, which leaves that row
    pending, exactly the row the re-send must cover, on every run.
    """
    now = time.time()
    fire_at = math.ceil(now + 0.1)
    time.sleep(fire_at - 0.05 - now)
    frozen, frozen_mono = datetime.now(UTC), time.monotonic()
    server.freeze()
    due = datetime.fromtimestamp(fire_at, UTC)

    def fenced() -> list[Any]:
        return [r for r in fire_rows(engine, "tick") if r.scheduled_for == due]

    [row] = wait_for(fenced, timeout=SHORT_TTL, what=f"the fire at {due} to be fenced")
    assert row.status == "pending", "sent to a frozen Redis?"
    return frozen, frozen_mono, due


def test_redis_restart_stops_firing_then_catches_up_and_resends(
    throwaway_redis: ThrowawayRedis, pg_url: str, engine: Engine
) -> None:
    s = spec("tick", catchup="all")
    prefix = "cwfault"
    settings = make_settings(
        prefix,
        redis_url=throwaway_redis.url,
        instance_id="svc-redis",
        database_url=pg_url,
        lease_ttl=SHORT_TTL,
        resend_after=1.0,
    )
    observer = redis.Redis.from_url(throwaway_redis.url, socket_timeout=1)
    try:
        with running_service(settings, pg_url, by_name(s)) as (svc, _):
            wait_for(lambda: len(fire_rows(engine, "tick")) >= 3, timeout=15, what="3 fires")
            assert svc.leading

            # Redis stops answering (frozen), then dies (SIGKILL, its data gone with it).
            killed, killed_mono, frozen_fire = _freeze_just_before_a_fire(throwaway_redis, engine)
            throwaway_redis.kill()
            # The leader steps down (a failed renewal, or its clock saying the lease may
            # have expired); firing itself is gated on that clock, checked below.
            wait_for(lambda: not svc.leading, timeout=SHORT_TTL + 8, what="the step-down")
            stepped_down_after = time.monotonic() - killed_mono
            time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - killed_mono)))
            assert not svc.leading
            # Taken before start(): the service may take the lease before start() returns.
            restarted = datetime.now(UTC)
            throwaway_redis.start()

            def leads_again() -> bool:
                try:
                    holder = svc.lease.holder()
                except redis.RedisError:
                    return False
                return svc.leading and holder is not None and holder["instance_id"] == "svc-redis"

            wait_for(leads_again, timeout=15, what="the lease to be taken again")
            assert svc.lease_changes >= 2

            def recovered() -> bool:
                rows = fire_rows(engine, "tick")
                return (
                    bool(rows)
                    and rows[-1].scheduled_for >= restarted + 2 * ONE_SECOND
                    and all(r.status == "enqueued" for r in rows)
                )

            wait_for(recovered, timeout=20, what="fires after the restart, all enqueued")
            ok, why = svc.health(max_silence=2.5)
            assert ok and firing_thread_alive(svc), why
        rows = fire_rows(engine, "tick")
        queued = set(queued_message_ids(observer, prefix))
    finally:
        observer.close()

    # Firing stopped within the lease TTL of Redis going away: no row was written between
    # then (plus a tick's slack) and the restart.
    quiet_from = killed + timedelta(seconds=SHORT_TTL + 0.5)
    during = [
        (r.scheduled_for, r.created_at) for r in rows if quiet_from < r.created_at < restarted
    ]
    assert not during, f"fired without a lease (Redis went away at {killed}): {during}"
    # What was fenced after Redis went away (at least the fire at frozen_fire) could not be
    # sent; it was re-sent once Redis was back, and its message is in the new queue.
    stuck = [r for r in rows if killed < r.created_at < restarted]
    assert frozen_fire in [r.scheduled_for for r in stuck], (
        f"stepped down after {stepped_down_after:.2f}s"
    )
    for r in stuck:
        assert r.status == "enqueued" and r.enqueued_at >= restarted, r
        assert r.message_id in queued
    times = [r.scheduled_for for r in rows]
    # Every second through the outage is there once: the seconds missed were caught up.
    assert_consecutive(times)
    assert times[0] < killed - timedelta(seconds=2)
    assert {r.status for r in rows} == {"enqueued"}
    # Everything enqueued after the restart is in the (restarted, empty) broker's queue.
    assert {r.message_id for r in rows if r.enqueued_at >= restarted} <= queued


# -- 3. a scheduler killed between fence and send --------------------------------------------


def test_a_fire_left_pending_by_a_killed_scheduler_is_resent_once(
    throwaway_redis: ThrowawayRedis, pg_url: str, engine: Engine
) -> None:
    s = spec("hourly", every=timedelta(hours=1))
    # What a scheduler SIGKILLed right after the fence INSERT leaves: a pending row, no message.
    scheduled_for = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    [left] = Fence(engine, "killed-scheduler").claim([request(s, scheduled_for, "scheduled")])
    prefix = "cwfault"
    settings = make_settings(
        prefix,
        redis_url=throwaway_redis.url,
        instance_id="svc-new",
        database_url=pg_url,
        resend_after=0.5,
    )
    observer = redis.Redis.from_url(throwaway_redis.url, socket_timeout=1)
    try:
        assert queued_message_ids(observer, prefix) == []
        with running_service(settings, pg_url, by_name(s)) as (svc, _):
            wait_for(lambda: svc.leading, timeout=5, what="the new leader")
            wait_for(
                lambda: fire_rows(engine, "hourly")[0].status == "enqueued",
                timeout=10,
                what="the pending fire to be re-sent",
            )
            # The leader re-sends every second: an enqueued row must not be sent again.
            time.sleep(1.5)
            raw = observer.hvals(f"{prefix}-dramatiq:default.msgs")
    finally:
        observer.close()

    [row] = fire_rows(engine, "hourly")
    assert row.message_id == left.message_id
    assert row.fired_by == "killed-scheduler"
    assert len(raw) == 1, f"sent {len(raw)} times"
    message: dramatiq.Message[Any] = dramatiq.Message.decode(cast(bytes, raw[0]))
    assert message.message_id == left.message_id
    assert message.actor_name == s.actor
    assert message.options["cronwork"]["schedule"] == "hourly"
    assert (
        message.options["cronwork"]["scheduled_for"]
        == left.message["options"]["cronwork"]["scheduled_for"]
    )


# -- 4. Redis restarts empty: queued messages and delayed retries are gone ---------------------


def test_an_empty_redis_restart_loses_no_fire(
    throwaway_redis: ThrowawayRedis, pg_url: str, engine: Engine
) -> None:
    """0.1.0 left such fires enqueued or retrying for ever, with no incident."""
    settings = make_settings("cwlost", redis_url=throwaway_redis.url, lost_after=1.0)
    fence = Fence(engine, "leader")
    recovery = Recovery.from_settings(settings, fence, ["default"])
    recovery.settle = timedelta(0)
    sender = sender_broker(settings)
    dispatcher = Dispatcher(sender, fence)
    flaky = spec("flaky", "flaky_job", max_retries=3, min_backoff=timedelta(minutes=5))
    queued = spec("queued", "queued_job")
    calls: list[str] = []
    h = Harness(engine, settings, lambda: make_engine(pg_url))
    try:

        @h.actor("flaky_job")
        def flaky_job() -> None:
            calls.append("flaky")
            if calls.count("flaky") == 1:
                raise RuntimeError("first try fails")

        @h.actor("queued_job")
        def queued_job() -> None:
            calls.append("queued")

        # flaky fails once and waits 5 minutes for its retry, delayed in the broker.
        h.start()
        retrying = h.fire(flaky)
        assert h.wait_fire(retrying, ("retrying",)).status == "retrying"
        h.close()
        # queued is sent while no worker runs.
        [waiting] = fence.claim([request(queued, datetime(2026, 3, 1, tzinfo=UTC), "scheduled")])
        assert dispatcher.send([waiting]) == 1
        assert recovery.resend_lost() == 0  # both messages are where they should be

        throwaway_redis.kill()
        throwaway_redis.start()  # empty: no persistence
        assert recovery.resend_lost() == 2
        rows = {r.id: r for r in fire_rows(engine)}
        assert rows[waiting.id].status == rows[retrying.id].status == "pending"
        # The lost retry is sent again as the retry it was (attempt 1), not as attempt 0.
        assert rows[retrying.id].message["options"]["retries"] == 1
        assert rows[waiting.id].error == "message lost by the broker"

        assert dispatcher.resend_pending(0.0) == 2
        h2 = Harness(engine, settings, lambda: make_engine(pg_url))
        try:

            @h2.actor("flaky_job")
            def flaky_again() -> None:
                calls.append("flaky")

            @h2.actor("queued_job")
            def queued_again() -> None:
                calls.append("queued")

            h2.start()
            assert h2.wait_fire(waiting).status == "succeeded"
            assert h2.wait_fire(retrying).status == "succeeded"
        finally:
            h2.close()
        attempts = [(a.attempt, a.status) for a in attempt_rows(engine, retrying.message_id)]
        assert attempts == [(0, "retrying"), (1, "succeeded")]
        assert sorted(calls) == ["flaky", "flaky", "queued"]
    finally:
        h.close()
        sender.close()


# -- 5. Outages are logged once, not once per loop ---------------------------------------------


def test_a_redis_outage_is_one_warning_and_one_info_for_a_standby(
    throwaway_redis: ThrowawayRedis, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """0.1.0 logged 'could not acquire lease' at WARNING four times a second."""
    settings = make_settings("cwquiet", redis_url=throwaway_redis.url, instance_id="standby")
    holder = redis.Redis.from_url(throwaway_redis.url)
    caplog.set_level(logging.INFO)
    # Someone else holds the lease: this replica stands by, trying to take it.
    holder.set(f"cwquiet:{LEASE_KEY}", json.dumps({"instance_id": "other"}), px=60_000)
    with running_service(settings, pg_url, by_name(spec("tick"))):
        time.sleep(0.5)
        throwaway_redis.kill()
        time.sleep(3.0)  # about 12 tries to take the lease
        throwaway_redis.start()
        wait_for(
            lambda: any("redis is back" in r.getMessage() for r in caplog.records),
            timeout=10,
            what="the end of the outage to be logged",
        )
        # The restart lost the other holder's lease too: this replica may take it now.
        lines = [r for r in caplog.records if r.name.startswith(("services", "cronwork"))]
    warnings = [r.getMessage() for r in lines if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("redis unreachable (acquire the lease failed")
    [back] = [r.getMessage() for r in lines if "is back" in r.getMessage()]
    assert re.fullmatch(r"redis is back after [\d.]+s; \d+ operation\(s\) failed meanwhile", back)
    assert int(back.split("; ")[1].split()[0]) >= 5
