"""Retention on a large table: what a pruning pass costs, and what it costs the fence.

Fills ``cronwork_fires`` with S schedules x F fires each (one attempt per fire, every
tenth fire failed), by ``generate_series`` in SQL, and ANALYZEs it. Then, with each
schedule's policy ``keep: {succeeded: 10, failed: 50}``:

- the first pass (deletes all but the newest 10 succeeded of each schedule), timed, with
  no time budget, while another thread claims a fire through the fence every few ms;
- a second pass (nothing left to delete: only the ranking);
- the same claims for as long with no pruning at all: the baseline, in the same run.

Figures: pass durations and fires deleted, and the max and 99th percentile latency of
a fence claim during the first pass against the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine, text

from bench._support import database, table
from services.schedules.spec import KeepPolicy, ScheduleSpec
from services.store.engines import make_engine
from services.store.fence import Fence, request
from services.store.retention import Pruner, Retention
from services.timeutil import utcnow
from services.vocabulary import FireKind, FireStatus

#: Seconds between two claims of the probe.
PROBE_EVERY = 0.005


def fill(engine: Engine, schedules: int, per_schedule: int, *, failed_every: int = 10) -> None:
    """``schedules`` x ``per_schedule`` finished fires (schedules ``s00000``…), one a minute
    back from an hour ago, each with one attempt; every ``failed_every``-th one failed."""
    params = {
        "n": schedules * per_schedule,
        "s": schedules,
        "every": failed_every,
        "newest": utcnow() - timedelta(hours=1),
        "kind": FireKind.SCHEDULED,
        "failed": FireStatus.FAILED,
        "succeeded": FireStatus.SUCCEEDED,
    }
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO cronwork_fires (schedule, scheduled_for, kind, status, message_id,
                                            message, created_at, updated_at, attempts)
                SELECT 's' || lpad((g % :s)::text, 5, '0'),
                       CAST(:newest AS timestamptz) - (g / :s) * interval '1 minute',
                       :kind,
                       CASE WHEN (g / :s) % :every = :every - 1 THEN :failed ELSE :succeeded END,
                       md5(g::text)::uuid::text, '{}'::jsonb, now(), now(), 1
                FROM generate_series(0, :n - 1) AS g
                """
            ),
            params,
        )
        conn.execute(
            text(
                """
                INSERT INTO cronwork_attempts (message_id, attempt, fire_id, schedule, status,
                                               started_at, instance_id)
                SELECT message_id, 0, id, schedule, status, scheduled_for, 'bench'
                FROM cronwork_fires
                """
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE cronwork_fires"))
        conn.execute(text("ANALYZE cronwork_attempts"))


def specs_for(schedules: int, keep: KeepPolicy) -> dict[str, ScheduleSpec]:
    return {
        f"s{i:05d}": ScheduleSpec(
            name=f"s{i:05d}",
            actor="noop",
            trigger="every",
            every=timedelta(minutes=1),
            keep=keep,
        )
        for i in range(schedules)
    }


@dataclass
class Probe:
    #: Each claim's latency, in seconds.
    latencies: list[float] = field(default_factory=list)
    #: What a claim raised (the probe stops at the first).
    errors: list[Exception] = field(default_factory=list)


@contextmanager
def claim_probe(engine: Engine, schedule: ScheduleSpec) -> Iterator[Probe]:
    """Claim a new fire of ``schedule`` every PROBE_EVERY seconds on another thread while
    the block runs, timing each claim."""
    probe = Probe()
    stop = threading.Event()
    fence = Fence(engine, "probe")
    start = utcnow()
    # Once before measuring: the first claim compiles the statement and may connect.
    fence.claim([request(schedule, start, FireKind.SCHEDULED)])

    def run() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            claim = [request(schedule, start + timedelta(seconds=i), FireKind.SCHEDULED)]
            began = time.perf_counter()
            try:
                won = fence.claim(claim)
            except Exception as exc:
                probe.errors.append(exc)
                return
            probe.latencies.append(time.perf_counter() - began)
            if len(won) != 1:
                probe.errors.append(RuntimeError(f"claim {i} won {len(won)} fires"))
                return
            stop.wait(PROBE_EVERY)

    thread = threading.Thread(target=run, name="claim-probe", daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        stop.set()
        thread.join()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else max(values)


def run(schedules: int, per_schedule: int) -> list[tuple[str, ...]]:
    with database() as url:
        engine = make_engine(url, pool_size=4)
        try:
            started = time.perf_counter()
            fill(engine, schedules, per_schedule)
            fill_s = time.perf_counter() - started
            specs = specs_for(schedules, KeepPolicy(succeeded=10, failed=50))
            pruner = Pruner(engine, Retention.from_specs(specs, None))
            with claim_probe(engine, specs["s00000"]) as probe:
                started = time.perf_counter()
                deleted = pruner.prune(budget_seconds=3600)
                first_s = time.perf_counter() - started
            started = time.perf_counter()
            again = pruner.prune(budget_seconds=3600)
            second_s = time.perf_counter() - started
            with claim_probe(engine, specs["s00001"]) as idle:
                time.sleep(min(first_s, 30.0))
        finally:
            engine.dispose()
    for failed in (probe, idle):
        if failed.errors:
            raise SystemExit(f"a claim failed: {failed.errors[0]!r}")
    during, baseline = probe.latencies, idle.latencies
    n = schedules * per_schedule
    ms = 1000
    return [
        ("retention", "fires", "seconds", "deleted", "claims", "claim max ms", "claim p99 ms"),
        ("fill (generate_series, + attempts)", f"{n:,}", f"{fill_s:.1f}", "", "", "", ""),
        ("baseline: claims, no pruning", "", "", "", str(len(baseline)),
         f"{max(baseline) * ms:.1f}", f"{p99(baseline) * ms:.1f}"),
        ("first pass, claims alongside", f"{n:,}", f"{first_s:.1f}", f"{deleted:,}",
         str(len(during)), f"{max(during) * ms:.1f}", f"{p99(during) * ms:.1f}"),
        ("second pass (nothing to delete)", f"{n - deleted:,}", f"{second_s:.2f}",
         f"{again:,}", "", "", ""),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--full", action="store_true", help="10,000 schedules x 100 fires (default 1,000 x 100)"
    )
    args = parser.parse_args(argv)
    schedules = 10_000 if args.full else 1_000
    return table(run(schedules, 100))


if __name__ == "__main__":
    print(main())
