"""Throwaway databases and Redis prefixes for benchmarks (same servers as the tests)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
import redis
from dramatiq.brokers.redis import RedisBroker

from services.store.migrate import upgrade

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger
    from sqlalchemy import Engine

    from services.scheduler.fenced import FencedScheduler
    from services.scheduler.jobstore import ScheduleJobStore
    from services.schedules.spec import ScheduleSpec

#: The ``bench_actors`` module the benchmarks' schedules.yaml files import: one no-op actor.
ACTORS = """\
import dramatiq


@dramatiq.actor
def tick(*args, **kwargs):
    return None
"""

PG_SERVER = os.environ.get("CRONWORK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("CRONWORK_TEST_REDIS", "redis://127.0.0.1:6379/0")

#: One APScheduler job per schedule ``sched00000``..., due within the hour.
JOBS = """
INSERT INTO apscheduler_jobs (id, next_run_time, job_state)
SELECT 'sched' || lpad(g::text, 5, '0'), extract(epoch FROM now()) + 60 + g % 3600,
       convert_to('{"format": 1, "fingerprint": ""}', 'UTF8')
FROM generate_series(0, :schedules - 1) AS g
"""


@contextmanager
def database(migrate: bool = True) -> Iterator[str]:
    name = f"cw_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{PG_SERVER}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_SERVER.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{name}"
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def redis_prefix() -> Iterator[str]:
    prefix = f"cwbench-{uuid.uuid4().hex[:8]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_SERVER)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    return _cpu_of(Path(f"/proc/{pid}/stat").read_text())


def cpu_by_name(names: Collection[str]) -> dict[str, float]:
    """CPU seconds so far of every process whose name is one of ``names``, summed by name:
    what the servers a benchmark shares the machine with (``postgres``, ``redis-server``)
    spent, read before and after the measured part."""
    out = dict.fromkeys(names, 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name in out:
            out[name] += _cpu_of(text)
    return out


def _cpu_of(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


@dataclass
class Rig:
    """cronwork's firing path as the scheduler runs it while leading, minus the lease loop."""

    engine: Engine
    broker: RedisBroker
    store: ScheduleJobStore
    triggers: dict[str, BaseTrigger]
    scheduler: FencedScheduler


@contextmanager
def cronwork_rig(specs: dict[str, ScheduleSpec]) -> Iterator[Rig]:
    """A throwaway database and Redis prefix, and a paused ``FencedScheduler`` over them
    with ``specs``' triggers (not yet synced: ``sync_jobs(rig.store, specs, rig.triggers)``)."""
    from services.broker import sender_broker
    from services.scheduler.dispatch import Dispatcher
    from services.scheduler.fenced import FencedScheduler, FireHandler
    from services.scheduler.jobstore import ScheduleJobStore
    from services.schedules.triggers import build_trigger
    from services.settings import Settings
    from services.store.engines import make_engine
    from services.store.fence import Fence

    with database() as url, redis_prefix() as prefix:
        engine = make_engine(url, pool_size=4)
        settings = Settings(redis_url=REDIS_SERVER, redis_prefix=prefix)  # type: ignore[arg-type]
        broker = sender_broker(settings)
        assert isinstance(broker, RedisBroker)
        broker.declare_queue("default")
        fence = Fence(engine, "bench")
        triggers = {name: build_trigger(spec) for name, spec in specs.items()}
        handler = FireHandler(engine, fence, Dispatcher(broker, fence), specs, triggers)
        store = ScheduleJobStore(engine, triggers)
        scheduler = FencedScheduler(handler, store, may_fire=lambda: True)
        scheduler.start(paused=True)
        try:
            yield Rig(engine, broker, store, triggers, scheduler)
        finally:
            if scheduler.running:
                scheduler.shutdown(wait=True)
            broker.close()
            engine.dispose()
