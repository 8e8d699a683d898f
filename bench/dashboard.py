"""The dashboard's schedules page at 10,000 schedules and 1,000,000 fires.

Server time (the app's own ``Server-Timing``: routing, queries, template) of the pages
people open most, on a database holding that much history, against the same pages on
an empty database with the same 10,000 schedules, measured in the same run on the same
Postgres. The goal: the schedules page under 300 ms.

Fires are written by one INSERT ... SELECT (100 per schedule, a tenth of them failed,
a few hundred with open incidents), then ANALYZEd, as months of retention would leave
them.
"""

from __future__ import annotations

import argparse
import statistics
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from bench._support import JOBS, database, table
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.engines import make_engine
from services.store.schedule_rows import sync_schedule_rows
from services.web.app import create_app
from services.web.dashboard import Dashboard

TOKEN = "bench-token"
#: Requests per page after two warm-ups; the median is reported.
RUNS = 15
PAGES = {
    "schedules page": "/",
    "schedules page 100": "/?page=100",
    "search by name": "/?q=sched0999",
    "filter: failing": "/?status=failing",
    "one schedule": "/schedules/s04242",
    "API: newest fires": "/api/fires?limit=50",
}

FILL = """
INSERT INTO cronwork_fires
    (schedule, scheduled_for, kind, status, message_id, message, fired_by, created_at,
     enqueued_at, started_at, finished_at, attempts, error, error_type, updated_at)
SELECT
    'sched' || lpad((g % :schedules)::text, 5, '0'),
    now() - make_interval(mins => (g / :schedules) * 15),
    'scheduled',
    CASE WHEN g % 10 = 3 THEN 'failed' ELSE 'succeeded' END,
    md5(g::text),
    '{}'::jsonb,
    'bench',
    now() - make_interval(mins => (g / :schedules) * 15),
    now() - make_interval(mins => (g / :schedules) * 15),
    now() - make_interval(mins => (g / :schedules) * 15) + interval '150 milliseconds',
    now() - make_interval(mins => (g / :schedules) * 15) + make_interval(secs => (g % 90)),
    1,
    CASE WHEN g % 10 = 3 THEN 'the gateway said no' END,
    CASE WHEN g % 10 = 3 THEN 'RuntimeError' END,
    now() - make_interval(mins => (g / :schedules) * 15) + make_interval(secs => (g % 90))
FROM generate_series(0, :fires - 1) AS g
"""
INCIDENTS = """
INSERT INTO cronwork_incidents (kind, schedule, opened_at, last_seen_at, count, details)
SELECT 'failed', 'sched' || lpad((g * 37)::text, 5, '0'), now(), now(), 1, '{}'::jsonb
FROM generate_series(0, 199) AS g
"""


def specs(n: int) -> dict[str, ScheduleSpec]:
    out = {}
    for i in range(n):
        name = f"sched{i:05d}"
        if i % 2:
            out[name] = ScheduleSpec(
                name=name, actor="noop", trigger="cron", cron=f"{i % 60} {i % 24} * * *"
            )
        else:
            out[name] = ScheduleSpec(
                name=name, actor="noop", trigger="every", every=timedelta(minutes=15)
            )
    return out


def fill(engine: Engine, schedules: dict[str, ScheduleSpec], fires: int) -> None:
    sync_schedule_rows(engine, schedules)
    n = len(schedules)
    with engine.begin() as conn:
        conn.execute(text(JOBS), {"schedules": n})
        conn.execute(text(FILL), {"schedules": n, "fires": fires})
        conn.execute(text(INCIDENTS))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


def server_ms(client: TestClient, path: str) -> float:
    times = []
    for i in range(RUNS + 2):
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        if i >= 2:
            times.append(float(r.headers["server-timing"].split("dur=")[1]))
    return statistics.median(times)


def measure(url: str, schedules: dict[str, ScheduleSpec]) -> dict[str, float]:
    engine = make_engine(url)
    settings = Settings(dashboard_token=TOKEN)  # type: ignore[arg-type]
    dash = Dashboard.from_settings(settings, engine, schedules, None)
    app = create_app(lambda: (True, "ok"), lambda: (True, "ok"), dash)
    try:
        with TestClient(app) as client:
            client.headers["authorization"] = f"Bearer {TOKEN}"
            client.get(f"/login?token={TOKEN}")
            return {name: server_ms(client, path) for name, path in PAGES.items()}
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--fires", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    schedules = specs(args.schedules)
    PAGES["one schedule"] = f"/schedules/sched{min(4242, args.schedules - 1):05d}"
    results: dict[str, Any] = {}
    with database() as url:
        sync_schedule_rows(make_engine(url), schedules)
        results["empty"] = measure(url, schedules)
    with database() as url:
        engine = make_engine(url)
        fill(engine, schedules, args.fires)
        engine.dispose()
        results["full"] = measure(url, schedules)
    rows = [("page", "schedules", "fires", "server ms", "empty db ms", "ratio")]
    for name in PAGES:
        full, empty = results["full"][name], results["empty"][name]
        rows.append(
            (
                name,
                str(args.schedules),
                str(args.fires),
                f"{full:.1f}",
                f"{empty:.1f}",
                f"{full / empty:.2f}" if empty else "-",
            )
        )
    return table(rows)


if __name__ == "__main__":
    print(main())
