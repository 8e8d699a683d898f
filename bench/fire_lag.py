"""Steady firing: 100 fires a second, from scheduled time to message in Redis.

100 schedules fire every second each, their start times 10 ms apart, so one fire is due
every 10 ms. A reader pops message ids off the queue's Redis list as they arrive (every
millisecond or so) and notes the arrival; the lag of a fire is its arrival minus its
scheduled time (the latest time on its schedule's grid before the arrival: lags are far
below the 1 s period). p50 and p99 over the run.

cronwork (fence row, then send, then mark enqueued) against stock APScheduler 3 on a
SQLAlchemyJobStore whose jobs send the same message, measured the same way, same run.

    python -m bench.fire_lag [--seconds 20] [--full]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dramatiq
import redis
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger
from dramatiq.brokers.redis import RedisBroker

from bench._support import REDIS_SERVER, cronwork_rig, database, redis_prefix, table
from services.scheduler.sync import sync_jobs
from services.schedules.spec import ScheduleSpec
from services.store.engines import make_engine

SCHEDULES = 100
#: Between two schedules' start times: one fire due every 10 ms.
SPACING = timedelta(milliseconds=10)
#: Fires in the first seconds are left out (connections warming up, first compiles).
WARMUP_SECONDS = 3.0


class ArrivalReader:
    """Pops message ids off a Dramatiq queue's list as they arrive; lag per fire, in ms."""

    def __init__(self, client: redis.Redis, namespace: str, anchor: datetime) -> None:
        self.client = client
        self.list_key = f"{namespace}:default"
        self.msgs_key = f"{namespace}:default.msgs"
        self.anchor = anchor
        self.lags_ms: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="arrivals", daemon=True)

    def __enter__(self) -> ArrivalReader:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        warm_until = self.anchor + timedelta(seconds=WARMUP_SECONDS)
        while not self.stop.is_set():
            ids = self.client.lpop(self.list_key, 1000)
            if not ids:
                time.sleep(0.001)
                continue
            arrived = datetime.now(UTC)
            for raw in self.client.hmget(self.msgs_key, ids):
                if raw is None:
                    continue
                data = raw if isinstance(raw, bytes) else raw.encode()
                index = int(dramatiq.Message.decode(data).args[0])
                scheduled = self._scheduled(index, arrived)
                if scheduled >= warm_until:
                    self.lags_ms.append((arrived - scheduled).total_seconds() * 1000)

    def _scheduled(self, index: int, arrived: datetime) -> datetime:
        """The latest time on schedule ``index``'s one-second grid at or before ``arrived``."""
        first = self.anchor + index * SPACING
        periods = int((arrived - first).total_seconds())
        return first + timedelta(seconds=max(periods, 0))


def run_cronwork(anchor: datetime, seconds: float) -> list[float]:
    specs = {
        f"s{i:03d}": ScheduleSpec(
            name=f"s{i:03d}",
            actor="noop",
            trigger="every",
            every=timedelta(seconds=1),
            start=anchor + i * SPACING,
            args=(i,),
        )
        for i in range(SCHEDULES)
    }
    with cronwork_rig(specs) as rig:
        sync_jobs(rig.store, specs, rig.triggers, now=anchor - timedelta(seconds=1))
        return _measure(rig.scheduler, rig.broker, anchor, seconds)


def _measure(
    scheduler: BaseScheduler, broker: RedisBroker, anchor: datetime, seconds: float
) -> list[float]:
    """Resume ``scheduler`` and read arrivals for ``seconds`` after ``anchor``."""
    with ArrivalReader(broker.client, broker.namespace, anchor) as reader:
        scheduler.resume()
        _sleep_until(anchor + timedelta(seconds=seconds))
        scheduler.shutdown(wait=True)
    return reader.lags_ms


_baseline_send: Callable[[int], object] | None = None


def _send_job(index: int) -> None:
    assert _baseline_send is not None
    _baseline_send(index)


def run_baseline(anchor: datetime, seconds: float) -> list[float]:
    """Stock APScheduler 3, its jobs in Postgres, each job sending its message."""
    global _baseline_send
    with database() as url, redis_prefix() as prefix:
        engine = make_engine(url, pool_size=4)
        broker = RedisBroker(url=REDIS_SERVER, namespace=f"{prefix}-dramatiq")
        actor = dramatiq.actor(actor_name="noop", broker=broker)(lambda index: None)
        _baseline_send = actor.send
        scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(20)},
            job_defaults={"misfire_grace_time": None, "coalesce": False},
        )
        scheduler.add_jobstore(SQLAlchemyJobStore(engine=engine), "default")
        scheduler.start(paused=True)
        for i in range(SCHEDULES):
            trigger = IntervalTrigger(seconds=1, start_date=anchor + i * SPACING)
            scheduler.add_job(_send_job, trigger, args=(i,), id=f"s{i:03d}")
        try:
            return _measure(scheduler, broker, anchor, seconds)
        finally:
            broker.close()
            engine.dispose()


def _sleep_until(moment: datetime) -> None:
    time.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0.0))


def _anchor() -> datetime:
    """A whole second far enough ahead for the setup (a few seconds at most)."""
    return (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if values else 0.0


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="firing time measured")
    parser.add_argument("--full", action="store_true", help="120 s of firing")
    args = parser.parse_args(argv)
    seconds = 120.0 if args.full else args.seconds
    # Stock APScheduler logs a job it could not submit while shutting down; not a finding.
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    base = run_baseline(_anchor(), seconds + WARMUP_SECONDS)
    cw = run_cronwork(_anchor(), seconds + WARMUP_SECONDS)
    rows = [("fire lag, 100 fires/s", "fires", "p50 ms", "p99 ms", "max ms", "ratio (p99)")]
    for name, lags in (
        ("baseline: stock APScheduler 3, SQLAlchemyJobStore", base),
        ("cronwork: fence + send + mark enqueued", cw),
    ):
        rows.append(
            (
                name,
                str(len(lags)),
                f"{percentile(lags, 50):.1f}",
                f"{percentile(lags, 99):.1f}",
                f"{max(lags, default=0.0):.1f}",
                f"{percentile(lags, 99) / max(percentile(base, 99), 1e-9):.2f}",
            )
        )
    return table(rows)


if __name__ == "__main__":
    print(main())
