"""The read queries at months of history: 1,000,000 fires and 3,000,000 attempts.

Each query behind ``cronwork status``, ``cronwork history`` (unfiltered and with each
filter), the dashboard's schedules page and the watchdog's pass
(services/store/watch_queries.py, and the leader's re-send scans in
services/store/fence.py), timed on a database holding that much history against the same
query on an empty one (the same schedules), in the same run on the same Postgres. The
goal: each under 50 ms at full size.

Fires are written by one INSERT ... SELECT: 1,000 schedules of 20 actors, a fiftieth of
the fires ad-hoc runs (half with an idempotency key, a fifth of an actor no schedule
runs), a few manual and catch-up ones, a twentieth failed, a few dozen still running or
pending; three attempts each. Then ANALYZE, as months of retention would leave them.
Default: a tenth of that (quick); ``--full`` for the full size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from bench._support import JOBS, database, table
from services.schedules.spec import ScheduleSpec
from services.store import watch_queries as watch
from services.store.engines import make_engine
from services.store.fence import Fence
from services.store.pages import SchedulesQuery, schedules_page
from services.store.schedule_rows import sync_schedule_rows
from services.store.views import history, schedules_of, status
from services.vocabulary import FireKind, FireStatus

SCHEDULES = 1000
ACTORS = 20
#: Runs per query after two warm-ups; the median is reported.
RUNS = 9
GOAL_MS = 50.0

#: ``age`` counts back from the newest fire, so ids grow with time as they do for real.
FIRES = """
INSERT INTO cronwork_fires
    (schedule, scheduled_for, kind, status, message_id, message, fired_by, created_at,
     enqueued_at, started_at, finished_at, attempts, error, error_type, updated_at,
     actor, idempotency_key)
SELECT
    CASE WHEN a.adhoc THEN 'adhoc:' || a.actor
         ELSE 'sched' || lpad((g % :schedules)::text, 5, '0') END,
    t.at,
    CASE WHEN a.adhoc THEN 'adhoc' WHEN g % 100 = 11 THEN 'manual'
         WHEN g % 100 = 13 THEN 'catchup' ELSE 'scheduled' END,
    s.status,
    md5(g::text),
    '{}'::jsonb,
    'bench',
    t.at,
    t.at,
    t.at + interval '150 milliseconds',
    CASE WHEN s.status IN ('running', 'pending') THEN NULL ELSE t.at + interval '2 seconds' END,
    CASE WHEN s.status = 'pending' THEN 0 ELSE 3 END,
    CASE WHEN s.status = 'failed' THEN 'the gateway said no' END,
    CASE WHEN s.status = 'failed' THEN 'RuntimeError' END,
    t.at + interval '2 seconds',
    CASE WHEN a.adhoc THEN a.actor END,
    CASE WHEN a.adhoc AND g % 100 = 7 THEN 'key-' || g END
FROM generate_series(0, :fires - 1) AS g
CROSS JOIN LATERAL (SELECT :fires - 1 - g AS age) AS o
CROSS JOIN LATERAL (SELECT g % 50 = 7 AS adhoc,
                           CASE WHEN g % 250 = 7 THEN 'adhoc_only'
                                ELSE 'actor' || (g % :actors) END AS actor) AS a
CROSS JOIN LATERAL (SELECT CASE WHEN a.adhoc THEN now() - make_interval(secs => o.age)
                                ELSE now() - make_interval(mins => (o.age / :schedules) * 15)
                           END AS at) AS t
CROSS JOIN LATERAL (SELECT CASE WHEN o.age < 30 THEN 'running' WHEN o.age < 40 THEN 'pending'
                                WHEN g % 20 = 3 THEN 'failed' WHEN g % 100 = 17 THEN 'missed'
                                ELSE 'succeeded' END AS status) AS s
"""
ATTEMPTS = """
INSERT INTO cronwork_attempts
    (message_id, attempt, fire_id, schedule, status, started_at, finished_at, duration_ms,
     instance_id, error_type, error_message)
SELECT f.message_id, n, f.id, f.schedule,
       CASE WHEN n < 2 THEN 'retrying' WHEN f.status IN ('succeeded', 'failed', 'running')
            THEN f.status ELSE 'skipped' END,
       f.started_at + make_interval(secs => n), f.finished_at, 2000, 'worker-' || (f.id % 20),
       CASE WHEN n < 2 OR f.status = 'failed' THEN 'RuntimeError' END,
       CASE WHEN n < 2 OR f.status = 'failed' THEN 'the gateway said no' END
FROM cronwork_fires AS f CROSS JOIN generate_series(0, 2) AS n
WHERE f.status <> 'pending'
"""
#: One resolved incident per schedule and kind covering its failures up to a little before
#: the newest fires: what the watchdog and the worker's hook leave behind.
INCIDENTS = """
INSERT INTO cronwork_incidents
    (kind, schedule, fire_id, opened_at, last_seen_at, resolved_at, count, details)
SELECT CASE WHEN status = 'missed' THEN 'missed' ELSE 'failed' END, schedule, max(id),
       now() - interval '1 day', now(), now(), count(*), '{}'::jsonb
FROM cronwork_fires
WHERE status IN ('failed', 'missed', 'timed_out')
  AND id < (SELECT max(id) - 2000 FROM cronwork_fires)
GROUP BY 1, 2
"""


def specs(n: int = SCHEDULES) -> dict[str, ScheduleSpec]:
    return {
        f"sched{i:05d}": ScheduleSpec(
            name=f"sched{i:05d}",
            actor=f"actor{i % ACTORS}",
            trigger="every",
            every=timedelta(minutes=15),
        )
        for i in range(n)
    }


def prepare(engine: Engine, schedules: dict[str, ScheduleSpec], fires: int) -> None:
    sync_schedule_rows(engine, schedules)
    n = len(schedules)
    with engine.begin() as conn:
        conn.execute(text(JOBS), {"schedules": n})
        if fires:
            conn.execute(text(FIRES), {"schedules": n, "fires": fires, "actors": ACTORS})
            conn.execute(text(ATTEMPTS))
            conn.execute(text(INCIDENTS))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


def queries(engine: Engine, schedules: dict[str, ScheduleSpec]) -> dict[str, Callable[[], Any]]:
    """Each query by the name it is reported under."""
    now = datetime.now(UTC)
    day_ago = now - timedelta(days=1)
    actor7 = schedules_of(schedules.values(), "actor7")
    fence = Fence(engine, "bench")
    page_one = history(engine, limit=20)
    cursor = int(page_one[-1]["id"]) if page_one else 1
    return {
        "status": lambda: status(engine, schedules, 10.0, strip_length=1),
        "status --json (20 recent fires each)": lambda: status(engine, schedules, 10.0),
        "schedules page": lambda: schedules_page(engine, schedules, SchedulesQuery(), 10.0),
        "history": lambda: history(engine),
        "history --schedule": lambda: history(engine, "sched00042"),
        "history --actor (schedules + ad hoc)": lambda: history(
            engine, actor="actor7", actor_schedules=actor7
        ),
        "history --actor (ad hoc only)": lambda: history(engine, actor="adhoc_only"),
        "history --status failed": lambda: history(engine, status=FireStatus.FAILED),
        "history --status running": lambda: history(engine, status=FireStatus.RUNNING),
        "history --status timed_out (none)": lambda: history(engine, status=FireStatus.TIMED_OUT),
        "history --kind adhoc": lambda: history(engine, kind=FireKind.ADHOC),
        "history --kind manual": lambda: history(engine, kind=FireKind.MANUAL),
        "history --kind scheduled": lambda: history(engine, kind=FireKind.SCHEDULED),
        "history --since (a day)": lambda: history(engine, since=day_ago),
        "history, every filter": lambda: history(
            engine,
            actor="actor7",
            actor_schedules=actor7,
            status=FireStatus.FAILED,
            kind=FireKind.ADHOC,
            since=now - timedelta(days=2),
        ),
        "history page 2 (before)": lambda: history(engine, limit=20, before=cursor),
        "watchdog: running attempts": lambda: watch.running_attempts(engine),
        "watchdog: pending by schedule": lambda: watch.pending_by_schedule(engine, now),
        "watchdog: missed and failed": lambda: watch.uncovered_missed_and_failed(engine, now),
        "watchdog: newest outcomes": lambda: watch.newest_final_times(
            engine, now - timedelta(hours=1)
        ),
        "watchdog: unfinished fires": lambda: watch.unfinished_fires(engine, now),
        "watchdog: succeeded since": lambda: watch.succeeded_since(
            engine, "sched00037", 1000, day_ago
        ),
        "watchdog: succeeded since (none)": lambda: watch.succeeded_since(
            engine, "sched00037", 2**40, day_ago
        ),
        "leader: pending fires": lambda: fence.pending(0, now=now),
        "leader: waiting fires": lambda: fence.waiting(timedelta(seconds=30)),
    }


def timed(run: Callable[[], Any]) -> float:
    times = []
    for i in range(RUNS + 2):
        start = time.perf_counter()
        run()
        if i >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(url: str, fires: int) -> dict[str, float]:
    engine = make_engine(url)
    schedules = specs()
    try:
        prepare(engine, schedules, fires)
        return {name: timed(run) for name, run in queries(engine, schedules).items()}
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--full", action="store_true", help="1,000,000 fires (default: 100,000, quick)"
    )
    parser.add_argument("--fires", type=int, help="fires to write (attempts: three each)")
    args = parser.parse_args(argv)
    fires = args.fires or (1_000_000 if args.full else 100_000)
    with database() as url:
        empty = measure(url, 0)
    with database() as url:
        full = measure(url, fires)
    rows = [("query", "fires", "ms", "empty db ms", f"under {GOAL_MS:.0f} ms")]
    for name in full:
        rows.append(
            (
                name,
                f"{fires:,}",
                f"{full[name]:.1f}",
                f"{empty[name]:.1f}",
                "yes" if full[name] < GOAL_MS else "NO",
            )
        )
    return table(rows)


if __name__ == "__main__":
    print(main())
