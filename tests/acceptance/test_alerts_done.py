"""Issue 3, "Done when": the real CLI (scheduler + worker processes) with an actor that
always fails and ``max_retries: 1`` yields, per failed fire, at most one Slack message
naming the schedule and the error, one Sentry event with the exception, and a Crons
check-in that ends in error — with no secret in any log line or CLI output.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from services.store.engines import make_engine
from services.store.tables import fires
from tests.acceptance.conftest import Cronwork
from tests.integration.alert_servers import SentryServer, SlackServer
from tests.waiting import wait_for

#: Trust auth ignores it; it is here to prove it never reaches a log line.
DB_PASSWORD = "Sup3rSecretPw"


@pytest.fixture
def servers() -> Iterator[tuple[SlackServer, SentryServer]]:
    slack, sentry = SlackServer(), SentryServer()
    yield slack, sentry
    slack.close()
    sentry.close()


def test_always_failing_actor_alerts_once_per_incident_with_sentry_and_crons(
    cronwork: Cronwork, servers: tuple[SlackServer, SentryServer]
) -> None:
    slack, sentry = servers
    db_url = cronwork.env["CRONWORK_DATABASE_URL"].replace(
        "postgres@", f"postgres:{DB_PASSWORD}@", 1
    )
    assert DB_PASSWORD in db_url
    cronwork.env.update(
        CRONWORK_DATABASE_URL=db_url,
        CRONWORK_SLACK_WEBHOOK_URL=slack.url,
        CRONWORK_SENTRY_DSN=sentry.dsn,
        CRONWORK_SENTRY_ENVIRONMENT="acceptance",
        CRONWORK_LOG_LEVEL="DEBUG",
    )
    cronwork.write_schedules(
        """
        imports: [acceptance_actors]
        schedules:
          charge-cards:
            actor: always_fails
            every: 2s
            max_retries: 1
            min_backoff: 100ms
            max_backoff: 200ms
        """
    )
    scheduler = cronwork.start("scheduler", name="sched-1")
    worker = cronwork.start("worker", "-p", "1", "-t", "2", name="worker-1")
    engine = make_engine(cronwork.env["CRONWORK_DATABASE_URL"])

    def failed() -> list[str]:
        with engine.connect() as conn:
            rows = conn.execute(select(fires.c.message_id).where(fires.c.status == "failed"))
            return [r.message_id for r in rows]

    try:
        wait_for(lambda: len(failed()) >= 3, timeout=60, what="three failed fires")
        wait_for(lambda: len(sentry.items("event")) >= 3, timeout=30, what="sentry events")
    finally:
        cronwork.stop(worker)
        cronwork.stop(scheduler)
    done = failed()

    # Sentry: one event per failed fire (not per attempt), each with the exception.
    wait_for(
        lambda: len(sentry.items("event")) >= len(done), timeout=15, what="every failure's event"
    )
    events = sentry.items("event")
    assert len(events) == len(done)
    for event in events:
        [exc] = event["exception"]["values"]
        assert exc["type"] == "RuntimeError" and exc["value"] == "the payment gateway said no"
        assert event["environment"] == "acceptance"

    # Crons: per failed fire, in_progress at the first attempt and error at the end.
    by_id: dict[str, list[str]] = {}
    for c in sentry.items("check_in"):
        assert c["monitor_slug"] == "charge-cards"
        by_id.setdefault(c["check_in_id"], []).append(c["status"])
    for message_id in done:
        assert by_id[uuid.UUID(message_id).hex] == ["in_progress", "error"]

    # Slack: one message for the incident; the repeats were folded into it.
    [message] = slack.messages
    assert "charge-cards" in message["text"]
    assert "RuntimeError: the payment gateway said no" in message["text"]
    assert "2 of 2" in json.dumps(message)
    listed = cronwork.run("incidents", "--json")
    assert listed.returncode == 0, listed.stderr
    [incident] = json.loads(listed.stdout)
    assert incident["kind"] == "failed" and incident["schedule"] == "charge-cards"
    assert incident["count"] == len(done)
    assert incident["sentry_event_id"] in {e["event_id"] for e in events}

    # No secret anywhere: logs (at DEBUG) and CLI output.
    text = cronwork.log("sched-1") + cronwork.log("worker-1") + listed.stdout + listed.stderr
    assert "Failed to process message" in text  # the logs are really there
    for secret in (slack.secret, sentry.key, DB_PASSWORD, "/services/T0AAAA/B0BBBB"):
        assert secret not in text
    engine.dispose()
