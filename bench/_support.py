"""Throwaway databases and Redis prefixes for benchmarks (same servers as the tests)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg2
import redis

from services.store.migrate import upgrade

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


def table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
