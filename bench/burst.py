"""A burst: N schedules all due in the same second.

cronwork (fence row per fire, then advance the job, then send) against a
baseline measured in the same run: stock APScheduler 3 on the same kind of
jobstore whose jobs just send the Dramatiq message (what a cron library inside
an app server does, with no fence and no record).

Figures: seconds from the due instant until the last message is in Redis (the
lag of the slowest fire), fires per second, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import dramatiq
import redis
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import select

from bench._support import REDIS_SERVER, cronwork_rig, database, redis_prefix, table
from services.scheduler.sync import sync_jobs
from services.schedules.spec import ScheduleSpec
from services.store.engines import make_engine
from services.store.tables import fires

#: Seconds between setting up the jobs and the instant they all come due.
LEAD_SECONDS = 5.0


def _due_instant(setup_estimate: float) -> datetime:
    at = datetime.now(UTC) + timedelta(seconds=setup_estimate + LEAD_SECONDS)
    return at.replace(microsecond=0)


def run_cronwork(n: int, due: datetime) -> tuple[float, float]:
    """Return (sync seconds, lag of the last fire in seconds)."""
    specs = {
        f"s{i:05d}": ScheduleSpec(
            name=f"s{i:05d}", actor="noop", trigger="every", every=timedelta(hours=1), start=due
        )
        for i in range(n)
    }
    with cronwork_rig(specs) as rig:
        started = time.perf_counter()
        sync_jobs(rig.store, specs, rig.triggers)
        sync_seconds = time.perf_counter() - started
        if datetime.now(UTC) >= due:
            raise SystemExit(f"setup took too long ({sync_seconds:.1f}s); raise LEAD_SECONDS")
        rig.scheduler.resume()
        key = f"{rig.broker.namespace}:default.msgs"
        lag = _wait_in_redis(rig.broker.client, key, n, due, "cronwork")
        with rig.engine.connect() as conn:
            ids = list(conn.execute(select(fires.c.message_id)).scalars())
        _check_exactly_once(rig.broker.client, key, ids, n, "cronwork")
    return sync_seconds, lag


_baseline_actor: dramatiq.Actor | None = None


def _send_job(name: str) -> None:
    assert _baseline_actor is not None
    _baseline_actor.send(name)


def _wait_in_redis(client: redis.Redis, key: str, n: int, due: datetime, who: str) -> float:
    """Seconds from ``due`` until ``n`` messages sit in the queue's hash in Redis.

    Polls Redis (HLEN is O(1)) rather than Postgres: a count over the fires table every few
    milliseconds would take CPU from the scheduler under test on a small machine.
    """
    deadline = time.monotonic() + 60 + n / 50
    while client.hlen(key) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"{who}: only {client.hlen(key)} of {n} messages before the deadline")
        time.sleep(0.005)
    return (datetime.now(UTC) - due).total_seconds()


def _check_exactly_once(
    client: redis.Redis, key: str, fire_ids: list[str] | None, n: int, who: str
) -> None:
    """No duplicate and no missing fire: ``n`` messages for ``n`` distinct schedules in Redis,
    and (cronwork) exactly the message ids of the ``n`` fire rows."""
    time.sleep(0.2)  # anything sent twice would land now
    messages = [dramatiq.Message.decode(bytes(raw)) for raw in client.hvals(key)]  # type: ignore[arg-type]
    names = {m.args[0] for m in messages if m.args}
    ids = {m.message_id for m in messages}
    problems = []
    if len(messages) != n or len(ids) != n:
        problems.append(f"{len(messages)} messages, {len(ids)} distinct, for {n} schedules")
    if fire_ids is not None:
        if len(fire_ids) != n or set(fire_ids) != ids:
            problems.append(f"{len(fire_ids)} fire rows do not match the {len(ids)} messages")
    elif len(names) != n:
        problems.append(f"{len(names)} distinct jobs sent, expected {n}")
    if problems:
        raise SystemExit(f"{who}: " + "; ".join(problems))


def run_baseline(n: int, due: datetime) -> tuple[float, float]:
    """Stock APScheduler: misfire grace None so nothing is dropped; jobs send directly."""
    global _baseline_actor
    with database() as url, redis_prefix() as prefix:
        engine = make_engine(url, pool_size=4)
        broker = RedisBroker(url=REDIS_SERVER, namespace=f"{prefix}-dramatiq")
        _baseline_actor = dramatiq.actor(actor_name="noop", broker=broker)(lambda name: None)
        scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(20)},
            job_defaults={"misfire_grace_time": None, "coalesce": False},
        )
        scheduler.add_jobstore(SQLAlchemyJobStore(engine=engine), "default")
        scheduler.start(paused=True)
        started = time.perf_counter()
        for i in range(n):
            scheduler.add_job(
                _send_job,
                IntervalTrigger(hours=1, start_date=due),
                args=(f"s{i:05d}",),
                id=f"s{i:05d}",
            )
        sync_seconds = time.perf_counter() - started
        if datetime.now(UTC) >= due:
            raise SystemExit(f"setup took too long ({sync_seconds:.1f}s); raise LEAD_SECONDS")
        scheduler.resume()
        key = f"{broker.namespace}:default.msgs"
        lag = _wait_in_redis(broker.client, key, n, due, "baseline")
        _check_exactly_once(broker.client, key, None, n, "baseline")
        scheduler.shutdown(wait=True)
        broker.close()
        engine.dispose()
    return sync_seconds, lag


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=2000)
    args = parser.parse_args(argv)
    n = args.schedules
    estimate = n / 150  # rough seconds to add n jobs, so they come due after setup
    base_sync, base_lag = run_baseline(n, _due_instant(estimate))
    cw_sync, cw_lag = run_cronwork(n, _due_instant(estimate))
    rows = [
        ("burst", "schedules", "add/sync s", "last fire lag s", "fires/s", "ratio (lag)"),
        (
            "baseline: stock APScheduler, no fence",
            str(n),
            f"{base_sync:.2f}",
            f"{base_lag:.2f}",
            f"{n / base_lag:.0f}",
            "1.00",
        ),
        (
            "cronwork: fence + record + send",
            str(n),
            f"{cw_sync:.2f}",
            f"{cw_lag:.2f}",
            f"{n / cw_lag:.0f}",
            f"{cw_lag / base_lag:.2f}",
        ),
    ]
    return table(rows)


if __name__ == "__main__":
    print(main())
