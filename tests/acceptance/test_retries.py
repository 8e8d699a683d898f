"""A failing actor with ``max_retries: 2`` leaves three attempt rows and a failed fire."""

from __future__ import annotations

import json

from tests.acceptance.conftest import Cronwork
from tests.waiting import wait_for

SCHEDULES = """
    imports: [acceptance_actors]
    schedules:
      charge:
        actor: always_fails
        every: 1h
        max_retries: 2
        min_backoff: 100ms
        max_backoff: 200ms
"""


def test_failing_actor_is_retried_and_every_attempt_recorded(cronwork: Cronwork) -> None:
    cronwork.write_schedules(SCHEDULES)
    assert cronwork.run("migrate").returncode == 0
    cronwork.start("worker", "--processes", "1", "--threads", "2", name="worker")
    fired = cronwork.run("trigger", "charge")
    assert fired.returncode == 0, fired.stderr
    assert "enqueued" in fired.stdout

    def final() -> list[dict[str, object]] | None:
        out = cronwork.run("history", "--schedule", "charge", "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        return data if data and data[0]["status"] == "failed" else None

    history = wait_for(final, timeout=60, what="the fire to fail for good", interval=0.5)
    assert isinstance(history, list)
    fire = history[0]
    assert fire["schedule"] == "charge"
    assert fire["kind"] == "manual"
    attempts = fire["attempts"]
    assert [a["attempt"] for a in attempts] == [0, 1, 2]
    assert [a["status"] for a in attempts] == ["retrying", "retrying", "failed"]
    for a in attempts:
        assert a["error"] == "RuntimeError: the payment gateway said no"
        assert a["instance_id"].startswith("worker")
        assert a["finished_at"] >= a["started_at"]
        assert a["duration_ms"] is not None
    assert "the payment gateway said no" in fire["error"]
