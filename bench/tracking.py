"""Worker throughput with cronwork's whole worker stack against the same Dramatiq worker bare.

N no-op messages through a real Redis broker, drained by P worker processes of 8 threads
each (spawned, as ``cronwork worker`` spawns them), messages enqueued before the workers
start. Baseline: Dramatiq's default middleware only. cronwork: the worker broker of
``cronwork worker`` (tracking with its claim and outcome, skip-if-succeeded, retries,
time limit, heartbeats, message references, the alert hook), Prometheus samples written
to files as `cronwork worker`'s children write them, and INFO logging, one line per
attempt, written to /dev/null. Each cronwork run then checks that every fire succeeded
with exactly one attempt.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.synchronize
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench._support import REDIS_SERVER, cpu_by_name, cpu_seconds, database, redis_prefix, table

THREADS = 8
#: The servers whose CPU time a run reports beside the workers'.
SERVERS = ("postgres", "redis-server")


@dataclass(frozen=True)
class Drain:
    """One run: how long the queue took to drain and the CPU seconds spent meanwhile."""

    seconds: float
    workers_cpu: float
    servers_cpu: dict[str, float]


def _child(
    mode: str,
    url: str | None,
    prefix: str,
    ready: multiprocessing.synchronize.Barrier,
    go: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
) -> None:
    broker = _broker(mode, url, prefix)
    worker = dramatiq.Worker(broker, worker_threads=THREADS)
    broker.emit_after("process_boot")
    ready.wait()
    go.wait()
    worker.start()
    done.wait()
    worker.stop()
    broker.close()


def _broker(mode: str, url: str | None, prefix: str) -> dramatiq.Broker:
    if mode == "baseline":
        broker = RedisBroker(url=REDIS_SERVER, namespace=f"{prefix}-dramatiq")
        dramatiq.actor(actor_name="noop", broker=broker, max_retries=0)(lambda: None)
        return broker
    import logging

    from prometheus_client import values
    from pydantic import SecretStr

    from services.logs import configure_logging
    from services.metrics import MULTIPROC_ENV
    from services.settings import Settings
    from services.store.engines import make_engine
    from services.worker.alert_hook import install
    from services.worker.broker import worker_broker

    assert url is not None
    # As `cronwork worker` runs its children: Prometheus samples in files its parent reads.
    assert MULTIPROC_ENV in os.environ and values.ValueClass is not values.MutexValue
    settings = Settings(
        database_url=SecretStr(url),
        redis_url=SecretStr(REDIS_SERVER),
        redis_prefix=prefix,
        instance_id=f"bench-{os.getpid()}",
    )
    configure_logging(settings, stream=open(os.devnull, "w"), coalesce=True)  # noqa: SIM115
    logging.getLogger().setLevel(logging.INFO)
    engine = make_engine(url, pool_size=THREADS + 2, pre_ping=False)  # as the worker's
    worker = worker_broker(settings, engine_factory=lambda: engine)
    dramatiq.actor(actor_name="noop", broker=worker)(lambda: None)
    worker.declare_queue("default")
    install(worker, settings, {}, lambda: engine)
    return worker


def _fill(mode: str, url: str | None, prefix: str, n: int) -> RedisBroker:
    """Enqueue the N messages (for cronwork: fenced fires, sent by the dispatcher)."""
    broker = RedisBroker(url=REDIS_SERVER, namespace=f"{prefix}-dramatiq")
    if mode == "baseline":
        actor = dramatiq.actor(actor_name="noop", broker=broker, max_retries=0)(lambda: None)
        for _ in range(n):
            actor.send()
        return broker
    from services.scheduler.dispatch import Dispatcher
    from services.schedules.spec import ScheduleSpec
    from services.store.engines import make_engine
    from services.store.fence import Fence, request
    from services.vocabulary import FireKind

    assert url is not None
    engine = make_engine(url)
    fence = Fence(engine, "bench")
    spec = ScheduleSpec(name="noop", actor="noop", trigger="every", every=timedelta(seconds=1))
    base = datetime(2026, 1, 1, tzinfo=UTC)
    reqs = [request(spec, base + timedelta(seconds=i), FireKind.SCHEDULED) for i in range(n)]
    for start in range(0, n, 500):
        Dispatcher(broker, fence).send(fence.claim(reqs[start : start + 500]))
    engine.dispose()
    return broker


@contextmanager
def _metrics_dir(mode: str) -> Iterator[None]:
    """For cronwork's children, what `cronwork worker` gives its own: a directory for their
    Prometheus samples (multiprocess mode, chosen when they import prometheus_client)."""
    if mode == "baseline":
        yield
        return
    from services.metrics import MULTIPROC_ENV

    with tempfile.TemporaryDirectory(prefix="cwbench-metrics-") as folder:
        os.environ[MULTIPROC_ENV] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV]


def run(mode: str, n: int, processes: int) -> Drain:
    ctx = multiprocessing.get_context("spawn")
    with redis_prefix() as prefix, database() as url, _metrics_dir(mode):
        filler = _fill(mode, url, prefix, n)
        ready = ctx.Barrier(processes + 1)
        go, done = ctx.Event(), ctx.Event()
        children = [
            ctx.Process(target=_child, args=(mode, url, prefix, ready, go, done))
            for _ in range(processes)
        ]
        for child in children:
            child.start()
        ready.wait(timeout=120)
        workers_before = sum(cpu_seconds(c.pid) for c in children if c.pid is not None)
        servers_before = cpu_by_name(SERVERS)
        started = time.perf_counter()
        go.set()
        filler.join("default", interval=20, timeout=600_000)
        elapsed = time.perf_counter() - started
        workers = sum(cpu_seconds(c.pid) for c in children if c.pid is not None)
        servers = cpu_by_name(SERVERS)
        done.set()
        for child in children:
            child.join(30)
        filler.close()
        if mode != "baseline":
            _check_recorded(url, n)
    return Drain(
        seconds=elapsed,
        workers_cpu=workers - workers_before,
        servers_cpu={k: servers[k] - servers_before[k] for k in SERVERS},
    )


def _check_recorded(url: str | None, n: int) -> None:
    """Every message ran once and is on record: its fire succeeded with one attempt. The
    queue was empty, so every message was acknowledged; each one only after this."""
    from sqlalchemy import text

    from services.store.engines import make_engine

    assert url is not None
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            fires = conn.execute(
                text("SELECT status, count(*) FROM cronwork_fires GROUP BY status")
            ).all()
            attempts = conn.execute(
                text("SELECT status, count(*) FROM cronwork_attempts GROUP BY status")
            ).all()
    finally:
        engine.dispose()
    expected = [("succeeded", n)]
    if [tuple(r) for r in fires] != expected or [tuple(r) for r in attempts] != expected:
        raise SystemExit(f"not every message is on record: fires {fires}, attempts {attempts}")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="pairs of runs (baseline, then cronwork) per process count; the table shows "
        "the pair with the median ratio, a line below it the spread",
    )
    args = parser.parse_args(argv)
    n = args.messages
    out: list[tuple[str, ...]] = [
        (
            "worker",
            "processes",
            "messages",
            "seconds",
            "msg/s",
            "ratio (msg/s)",
            "CPU ms/msg: workers",
            "postgres",
            "redis",
        )
    ]
    spreads: list[str] = []
    for processes in args.processes:
        # Each pair is its own same-run comparison; identical runs differ by 10% and more
        # on a 2-core machine, so one pair alone can mislead.
        pairs = [
            (run("baseline", n, processes), run("cronwork", n, processes))
            for _ in range(args.rounds)
        ]
        pairs.sort(key=lambda pair: _ratio(*pair))
        base, tracked = pairs[len(pairs) // 2]
        out.append(
            ("baseline: Dramatiq, no tracking", str(processes), str(n), *_fig(n, base, base))
        )
        out.append(
            ("cronwork: whole worker stack", str(processes), str(n), *_fig(n, tracked, base))
        )
        if len(pairs) > 1:
            ratios = [_ratio(*pair) for pair in pairs]
            spreads.append(
                f"{processes} process(es): ratio {ratios[0]:.2f}-{ratios[-1]:.2f} over "
                f"{len(pairs)} rounds, median shown"
            )
    return "\n".join([table(out), *spreads])


def _ratio(base: Drain, drain: Drain) -> float:
    """Throughput against the baseline's: what the goal states."""
    return base.seconds / drain.seconds


def _fig(n: int, drain: Drain, base: Drain) -> tuple[str, ...]:
    per_message = (drain.workers_cpu, *(drain.servers_cpu[s] for s in SERVERS))
    return (
        f"{drain.seconds:.2f}",
        f"{n / drain.seconds:.0f}",
        f"{_ratio(base, drain):.2f}",
        *(f"{1000 * cpu / n:.2f}" for cpu in per_message),
    )


if __name__ == "__main__":
    print(main())
