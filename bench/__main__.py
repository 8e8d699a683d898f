"""``make bench``: every benchmark, each against its own same-run baseline.

Quick sizes by default (a few minutes on 2 cores); ``--full`` (``make bench
BENCH_ARGS=--full``) runs the sizes the goals are stated at: a burst of 10,000 schedules,
an hour of a 10,000-schedule scheduler, two minutes of steady firing, a million fires
behind the dashboard. ``--only burst fire_lag`` picks some.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from bench import (
    burst,
    check_big,
    dashboard,
    failover,
    fire_lag,
    history,
    retention,
    scheduler_memory,
    tracking,
)

logging.basicConfig(level=logging.WARNING)

#: name -> (its main, quick arguments, full arguments)
BENCHMARKS: dict[str, tuple[Callable[[list[str]], str], list[str], list[str]]] = {
    "burst": (burst.main, ["--schedules", "2000"], ["--schedules", "10000"]),
    "fire_lag": (fire_lag.main, ["--seconds", "15"], ["--full"]),
    "failover": (failover.main, [], ["--full"]),
    "scheduler_memory": (scheduler_memory.main, ["--minutes", "1"], ["--full"]),
    "tracking": (tracking.main, [], ["--messages", "10000", "--rounds", "3"]),
    "dashboard": (dashboard.main, ["--fires", "100000"], []),
    "history": (history.main, [], ["--full"]),
    "retention": (retention.main, [], ["--full"]),
    "check_big": (check_big.main, ["--schedules", "20000"], ["--schedules", "150000"]),
}

parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
parser.add_argument("--full", action="store_true", help="the full sizes (an hour or more)")
parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
args = parser.parse_args()
for name, (run, quick, full) in BENCHMARKS.items():
    if args.only and name not in args.only:
        continue
    print(run(full if args.full else quick), flush=True)
    print(flush=True)
