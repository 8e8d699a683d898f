"""Failover: two ``cronwork scheduler`` processes, the leader stopped; how late is the next fire?

One schedule fires every second (catch-up ``all``). Two real schedulers run on a throwaway
database and Redis prefix with the default lease; once the first leads and the second
stands by, the leader gets SIGTERM (a deploy: it hands the lease back) or SIGKILL (a
crash: the lease must expire first, for reference). Figures: how late the first fire
scheduled after the signal reached Redis (its ``enqueued_at`` minus its scheduled time),
the worst lateness in the seconds after, and whether every second fired exactly once.

    python -m bench.failover
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

from bench._support import ACTORS, REDIS_SERVER, database, redis_prefix, table
from services.constants import LEASE_KEY

SCHEDULES = """\
imports: [bench_actors]
schedules:
  every-second:
    actor: tick
    every: 1s
    catchup: all
    catchup_window: 5m
"""
#: Seconds of fires after the signal whose lateness is looked at.
AFTER_SECONDS = 5


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"failover bench: no {what} within {timeout:.0f}s")


def run(sig: signal.Signals) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory(prefix="cw-bench-failover-") as tmp,
        database() as url,
        redis_prefix() as prefix,
    ):
        folder = Path(tmp)
        (folder / "schedules.yaml").write_text(SCHEDULES)
        (folder / "bench_actors.py").write_text(ACTORS)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWORK_")} | {
            "CRONWORK_DATABASE_URL": url,
            "CRONWORK_REDIS_URL": REDIS_SERVER,
            "CRONWORK_REDIS_PREFIX": prefix,
            "CRONWORK_HTTP_PORT": "0",
            "PYTHONPATH": f"{folder}{os.pathsep}{Path(__file__).resolve().parents[1]}",
        }
        client = redis.Redis.from_url(REDIS_SERVER)
        engine = create_engine(url)
        procs: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str) -> None:
            log = open(folder / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "services", "scheduler"],
                cwd=folder,
                env={**env, "CRONWORK_INSTANCE_ID": name},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def leader() -> str | None:
            raw = client.get(f"{prefix}:{LEASE_KEY}")
            return str(json.loads(raw)["instance_id"]) if raw else None

        def fires() -> list[Any]:
            with engine.connect() as conn:
                return list(
                    conn.execute(
                        text(
                            "select scheduled_for, enqueued_at, fired_by from cronwork_fires "
                            "where status = 'enqueued' order by scheduled_for"
                        )
                    )
                )

        try:
            start("sched-a")
            _wait(lambda: leader() == "sched-a", 30, "leader")
            start("sched-b")
            # The standby is ready once it has loaded its schedules and polls for the lease.
            _wait(lambda: "starting" in (folder / "sched-b.log").read_text(), 30, "standby")
            _wait(lambda: len(fires()) >= 3, 30, "fires under the first leader")
            signalled = datetime.now(UTC)
            procs["sched-a"].send_signal(sig)
            after = signalled + timedelta(seconds=AFTER_SECONDS)
            _wait(
                lambda: any(f.scheduled_for >= after for f in fires()),
                60,
                "fires under the new leader",
            )
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
                proc.wait(30)
        rows = fires()
        engine.dispose()
        client.close()
    later = [f for f in rows if signalled < f.scheduled_for <= after]
    lateness = [(f.enqueued_at - f.scheduled_for).total_seconds() for f in later]
    times = [f.scheduled_for for f in rows]
    gaps = sum(1 for a, b in itertools.pairwise(times) if b - a != timedelta(seconds=1))
    return {
        "next_late_s": lateness[0],
        "worst_late_s": max(lateness),
        "gaps": float(gaps),
        "new_leader_late_s": next(
            (late for f, late in zip(later, lateness, strict=True) if f.fired_by == "sched-b"),
            float("nan"),
        ),
        "fires": float(len(rows)),
    }


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="(the same run; it is short)")
    parser.parse_args(argv)
    rows = [
        (
            "failover, 1 fire/s",
            "next fire late s",
            f"worst in {AFTER_SECONDS} s",
            "new leader's first late s",
            "missed/doubled",
            "fires",
        )
    ]
    for sig, what in (
        (signal.SIGTERM, "SIGTERM the leader (hands the lease back)"),
        (signal.SIGKILL, "SIGKILL the leader (default 10 s lease expires)"),
    ):
        r = run(sig)
        rows.append(
            (
                what,
                f"{r['next_late_s']:.2f}",
                f"{r['worst_late_s']:.2f}",
                f"{r['new_leader_late_s']:.2f}",
                f"{r['gaps']:.0f}",
                f"{r['fires']:.0f}",
            )
        )
    return table(rows)


if __name__ == "__main__":
    print(main())
