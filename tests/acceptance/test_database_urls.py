"""CRONWORK_DATABASE_URL as hosting providers hand it out: ``postgresql://``, ``postgres://``.

SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3 (not installed) and does not
know ``postgres://``. Every reader of the URL must take both as psycopg2: ``migrate``
(Alembic), ``scheduler`` (its engine and its /readyz probe) and ``status``.
"""

from __future__ import annotations

import json

import pytest

from tests.acceptance.conftest import TICKER, Cronwork, free_port, get
from tests.conftest import scratch_database
from tests.waiting import wait_for


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_migrate_scheduler_and_status_with_a_provider_url(cronwork: Cronwork, scheme: str) -> None:
    cronwork.write_schedules(TICKER)
    # An empty database: `migrate` builds the whole schema through Alembic from this URL.
    with scratch_database("cw_url") as psycopg2_url:
        url = psycopg2_url.replace("postgresql+psycopg2://", f"{scheme}://", 1)
        assert url.startswith(f"{scheme}://") and "psycopg" not in url
        env = {"CRONWORK_DATABASE_URL": url}

        migrate = cronwork.run("migrate", **env)
        assert migrate.returncode == 0, migrate.stderr
        assert "database schema is up to date" in migrate.stdout

        name, port = f"sched-{scheme}", free_port()
        scheduler = cronwork.start("scheduler", name=name, CRONWORK_HTTP_PORT=str(port), **env)

        def status() -> dict:
            out = cronwork.run("status", "--json", **env)
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        def led_and_fired() -> bool:
            data = status()
            (ticker,) = data["schedules"]
            return (data["leader"] or {}).get("instance_id") == name and bool(ticker["last_fire"])

        wait_for(led_and_fired, timeout=30, what=f"{name} to lead and fire ticker")
        assert get(port, "/readyz") == (200, "ok: database ok; redis ok\n")
        table = cronwork.run("status", **env)
        assert table.returncode == 0, table.stderr
        assert name in table.stdout and "ticker" in table.stdout
        cronwork.stop(scheduler)
        assert scheduler.returncode == 0, cronwork.log(name)
        assert "Traceback" not in cronwork.log(name)
