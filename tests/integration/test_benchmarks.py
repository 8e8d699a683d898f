"""The benchmarks still run: each at a tiny size, against the real Postgres and Redis.

Not timed (figures belong to ``make bench``); this only keeps a schema change from
breaking a benchmark's fill silently, as a NOT NULL column once broke bench/dashboard.py.
"""

from __future__ import annotations

import pytest

from bench import burst, dashboard, history, tracking

pytestmark = pytest.mark.timeout(240)


def rows(table: str) -> list[str]:
    return [line.split("  ")[0] for line in table.splitlines()[1:]]


def test_dashboard_bench_fills_and_times_its_pages() -> None:
    out = dashboard.main(["--schedules", "60", "--fires", "600"])
    assert "schedules page" in rows(out), out


def test_history_bench_fills_and_times_its_queries() -> None:
    out = history.main(["--fires", "3000"])
    wanted = {"status", "history --status failed", "watchdog: missed and failed"}
    assert wanted <= set(rows(out)), out


def test_burst_bench_counts_every_fire_once() -> None:
    out = burst.main(["--schedules", "40"])
    assert any(r.startswith("cronwork") for r in rows(out)), out


def test_tracking_bench_drains_its_messages() -> None:
    out = tracking.main(["--messages", "60", "--processes", "1", "--rounds", "2"])
    assert any(r.startswith("cronwork") for r in rows(out)), out
    assert "over 2 rounds" in out, out
