"""Worker throughput with attempt tracking against the same worker without it.

N no-op messages through a real Redis broker and one in-process Dramatiq worker
(8 threads). Baseline: Dramatiq's default middleware only. cronwork: the same plus
the tracking middleware, which locks the fire row and writes the attempt at start
and end (three short transactions per message), and the heartbeat middleware.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench._support import REDIS_SERVER, database, redis_prefix, table
from services.scheduler.dispatch import Dispatcher
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, request
from services.vocabulary import FireKind
from services.worker.broker import worker_broker

THREADS = 8


def _drain(broker: dramatiq.Broker, n: int) -> float:
    worker = dramatiq.Worker(broker, worker_threads=THREADS)
    broker.emit_after("process_boot")
    started = time.perf_counter()
    worker.start()
    broker.join("default", timeout=600_000)
    worker.join()
    elapsed = time.perf_counter() - started
    worker.stop()
    return elapsed


def run_baseline(n: int) -> float:
    with redis_prefix() as prefix:
        broker = RedisBroker(url=REDIS_SERVER, namespace=f"{prefix}-dramatiq")
        actor = dramatiq.actor(actor_name="noop", broker=broker, max_retries=0)(lambda: None)
        for _ in range(n):
            actor.send()
        elapsed = _drain(broker, n)
        broker.close()
    return elapsed


def run_tracked(n: int) -> float:
    with database() as url, redis_prefix() as prefix:
        engine = make_engine(url, pool_size=THREADS, pre_ping=False)  # as the worker does
        settings = Settings(redis_url=REDIS_SERVER, redis_prefix=prefix)  # type: ignore[arg-type]
        broker = worker_broker(settings, engine_factory=lambda: engine, instance_id="bench")
        dramatiq.actor(actor_name="noop", broker=broker)(lambda: None)
        broker.declare_queue("default")
        fence = Fence(engine, "bench")
        spec = ScheduleSpec(name="noop", actor="noop", trigger="every", every=timedelta(seconds=1))
        base = datetime(2026, 1, 1, tzinfo=UTC)
        reqs = [request(spec, base + timedelta(seconds=i), FireKind.SCHEDULED) for i in range(n)]
        won = []
        for start in range(0, n, 500):
            won += fence.claim(reqs[start : start + 500])
        Dispatcher(broker, fence).send(won)
        elapsed = _drain(broker, n)
        broker.close()
        engine.dispose()
    return elapsed


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    n = parser.parse_args(argv).messages
    base = run_baseline(n)
    tracked = run_tracked(n)
    return table(
        [
            ("worker", "messages", "seconds", "msg/s", "ratio (msg/s)"),
            ("baseline: Dramatiq, no tracking", str(n), f"{base:.2f}", f"{n / base:.0f}", "1.00"),
            (
                "cronwork: tracked attempts",
                str(n),
                f"{tracked:.2f}",
                f"{n / tracked:.0f}",
                f"{base / tracked:.2f}",
            ),
        ]
    )


if __name__ == "__main__":
    print(main())
