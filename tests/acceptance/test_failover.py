"""Three scheduler replicas and a worker; the leader is SIGKILLed twice.

Every second of the run must be fired exactly once and succeed exactly once,
with nothing missed (docs/design.md: the fence, the lease, catch-up, sending),
using only the real CLI.
"""

from __future__ import annotations

import itertools
import signal
from datetime import timedelta

import redis
from sqlalchemy import create_engine, text

from tests.acceptance.conftest import Cronwork, leader_of
from tests.conftest import REDIS_SERVER
from tests.waiting import wait_for

SCHEDULES = """
    imports: [acceptance_actors]
    schedules:
      every-second:
        actor: tick
        every: 1s
        catchup: all
        catchup_window: 5m
        max_retries: 0
"""


def test_leader_killed_twice_every_second_fires_once(cronwork: Cronwork, redis_prefix: str) -> None:
    cronwork.write_schedules(SCHEDULES)
    assert cronwork.run("migrate").returncode == 0
    client = redis.Redis.from_url(REDIS_SERVER)
    worker = cronwork.start("worker", "--processes", "1", "--threads", "4", name="worker")
    schedulers = {
        name: cronwork.start("scheduler", name=name) for name in ("sched-a", "sched-b", "sched-c")
    }
    engine = create_engine(cronwork.env["CRONWORK_DATABASE_URL"])

    def succeeded() -> int:
        with engine.connect() as conn:
            return conn.execute(
                text("select count(*) from cronwork_fires where status = 'succeeded'")
            ).scalar_one()

    killed: list[str] = []
    for _ in range(2):
        leader = wait_for(lambda: leader_of(client, redis_prefix), timeout=20, what="a leader")
        assert isinstance(leader, str) and leader in schedulers
        before = succeeded()
        wait_for(
            lambda b=before: succeeded() >= b + 4,
            timeout=30,
            what="fires to succeed under this leader",
        )
        schedulers[leader].send_signal(signal.SIGKILL)
        schedulers[leader].wait(10)
        killed.append(leader)
        # The dead leader's lease expires (ttl 2 s) and a standby takes over.
        wait_for(
            lambda dead=leader: leader_of(client, redis_prefix) not in (None, dead),
            timeout=20,
            what="a standby to take the lease",
        )
    survivor = leader_of(client, redis_prefix)
    assert survivor not in killed
    before = succeeded()
    wait_for(lambda: succeeded() >= before + 3, timeout=30, what="fires under the last leader")
    for name, proc in schedulers.items():
        if name not in killed:
            cronwork.stop(proc)  # SIGTERM: releases the lease

    # Let the worker finish what was sent, then stop it.
    def settled() -> bool:
        with engine.connect() as conn:
            return not conn.execute(
                text(
                    "select count(*) from cronwork_fires "
                    "where status in ('pending', 'enqueued', 'running', 'retrying')"
                )
            ).scalar_one()

    wait_for(settled, timeout=30, what="all fires to finish")
    cronwork.stop(worker)

    with engine.connect() as conn:
        fires = conn.execute(
            text(
                "select f.scheduled_for, f.status, f.fired_by, "
                "(select count(*) from cronwork_attempts a "
                " where a.fire_id = f.id and a.status = 'succeeded') as ok "
                "from cronwork_fires f where schedule = 'every-second' order by scheduled_for"
            )
        ).all()
    engine.dispose()
    assert len(fires) >= 10, cronwork.log("worker")[-3000:]
    times = [f.scheduled_for for f in fires]
    # No second is missing between the first and the last fire, and none is doubled.
    gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a != timedelta(seconds=1)]
    assert gaps == [], f"missed or doubled seconds: {gaps[:5]}"
    not_ok = [
        (f.scheduled_for, f.status, f.ok) for f in fires if f.status != "succeeded" or f.ok != 1
    ]
    assert not_ok == [], f"fires not succeeded exactly once: {not_ok[:5]}"
    # Three leaders in turn fired one gap-free run of seconds: the two killed ones
    # and the survivor, whose lease gaps were caught up by their successors.
    assert {f.fired_by for f in fires} == {*killed, survivor}
    assert len(set(killed)) == 2
