"""Final-failure alerts from a real Dramatiq worker: Slack (a local HTTP server) and Sentry
(the real SDK sending to a local server that records envelopes), on real Postgres/Redis.

What must hold (issue 3): one Slack message per failed fire — not one per attempt —
naming the schedule and the error; repeats of a failing schedule fold into the open
incident, with a reminder after CRONWORK_ALERT_REMINDER; a later success resolves it
with one recovery message; a 429 is retried after Retry-After; Slack being down does
not slow or break the job; Sentry gets one event with the exception and a Crons
check-in ending in error; no secret reaches a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sentry_sdk
from sqlalchemy import Engine, select

from services.liveness import liveness_for
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.engines import make_engine
from services.store.schedule_rows import sync_schedule_rows
from services.store.tables import incidents
from services.timeutil import utcnow
from services.watch.alerter import Alerter
from services.watch.sentry import init_sentry, monitor_slug
from services.watch.slack import SlackSender
from services.watch.watchdog import Watchdog
from services.worker.alert_hook import AlertHook, install
from tests.integration.alert_servers import (  # noqa: F401 (fixtures)
    SentryServer,
    SlackServer,
    sentry_server_fixture,
    slack_server_fixture,
)
from tests.integration.conftest import make_settings, spec
from tests.integration.worker_harness import Harness
from tests.waiting import wait_for

FAST = {"min_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(milliseconds=50)}


class Rig:
    """A worker harness with the alert hook installed, plus its Alerter and settings."""

    def __init__(self, harness: Harness, hook: AlertHook, settings: Settings) -> None:
        self.h = harness
        self.hook = hook
        self.settings = settings

    @property
    def alerter(self) -> Alerter:
        return self.hook.alerter

    def schedules(self, *specs: ScheduleSpec) -> None:
        for s in specs:
            self.hook.specs[s.name] = s
        sync_schedule_rows(self.h.engine, {s.name: s for s in specs})

    def incidents(self) -> list[Any]:
        with self.h.engine.connect() as conn:
            return list(conn.execute(select(incidents).order_by(incidents.c.id)).all())

    def settle(self) -> None:
        assert self.alerter.join(30)
        sentry_sdk.flush(5)


@pytest.fixture
def rig_factory(engine: Engine, pg_url: str, redis_prefix: str) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def build(*, sentry: SentryServer | None = None, **extra: Any) -> Rig:
        settings = make_settings(
            redis_prefix,
            sentry_dsn=sentry.dsn if sentry else None,
            sentry_environment="test",
            sentry_release="cronwork@test",
            **extra,
        )
        if sentry is not None:
            assert init_sentry(settings, dramatiq=True)  # before the broker, as in workers
        harness = Harness(engine, settings, lambda: make_engine(pg_url))
        hook = install(harness.broker, settings, {}, lambda: make_engine(pg_url), "worker-1")
        rig = Rig(harness, hook, settings)
        made.append(rig)
        return rig

    yield build
    for rig in made:
        rig.h.close()
    sentry_sdk.flush(2)
    sentry_sdk.init(dsn=None, default_integrations=False)  # no Sentry for later tests


def _failing(rig: Rig, name: str = "always_fails") -> list[int]:
    calls: list[int] = []

    @rig.h.actor(name)
    def fails() -> None:
        calls.append(1)
        raise ValueError(f"payment gateway said no (call {len(calls)})\nsecond line")

    return calls


def _texts(message: dict[str, Any]) -> str:
    return repr(message)


# -- the "Done when" case ------------------------------------------------------------------


def test_final_failure_alerts_once_with_sentry_event_and_error_checkin(
    rig_factory: Callable[..., Rig],
    slack_server: SlackServer,
    sentry_server: SentryServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rig = rig_factory(sentry=sentry_server, slack_webhook_url=slack_server.url)
    calls = _failing(rig)
    s = spec("nightly-charge", "always_fails", max_retries=1, **FAST)
    rig.schedules(s)
    rig.h.start()

    fire = rig.h.fire(s)
    row = rig.h.wait_fire(fire, ("failed", "succeeded"))
    rig.settle()

    assert row.status == "failed" and len(calls) == 2  # two attempts ...
    [message] = slack_server.messages  # ... one message
    text = _texts(message)
    assert "nightly-charge" in message["text"]
    assert "ValueError: payment gateway said no (call 2)" in message["text"]
    assert "second line" not in message["text"]
    assert "always_fails" in text and "2 of 2" in text and "worker-1" in text

    [inc] = rig.incidents()
    assert (inc.kind, inc.schedule, inc.count, inc.fire_id) == ("failed", s.name, 1, fire.id)
    assert inc.last_notified_at is not None and inc.resolved_at is None

    # Sentry: exactly one error event (the retried attempt is not reported), with the
    # exception, and its id in the Slack message and the incident.
    wait_for(lambda: sentry_server.items("event"), what="a sentry event")
    time.sleep(0.3)
    events = sentry_server.items("event")
    assert len(events) == 1, [e.get("exception") for e in events]
    [exc] = events[0]["exception"]["values"]
    assert exc["type"] == "ValueError" and "call 2" in exc["value"]
    assert events[0]["environment"] == "test" and events[0]["release"] == "cronwork@test"
    assert inc.sentry_event_id == events[0]["event_id"]
    assert events[0]["event_id"] in text

    # Crons: in_progress at the first attempt, error only at the final outcome.
    checkins = sentry_server.items("check_in")
    assert [c["status"] for c in checkins] == ["in_progress", "error"]
    assert {c["monitor_slug"] for c in checkins} == {monitor_slug(s.name)}
    assert len({c["check_in_id"] for c in checkins}) == 1
    config = checkins[-1]["monitor_config"]
    assert config["schedule"] == {"type": "interval", "value": 1, "unit": "minute"}
    assert config["timezone"] == "UTC" and config["failure_issue_threshold"] == 1

    _assert_no_secrets(caplog, slack_server, sentry_server)


def test_success_checks_in_ok_and_sends_nothing(
    rig_factory: Callable[..., Rig], slack_server: SlackServer, sentry_server: SentryServer
) -> None:
    rig = rig_factory(sentry=sentry_server, slack_webhook_url=slack_server.url)
    attempts: list[int] = []

    @rig.h.actor("flaky")
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    s = ScheduleSpec(
        name="Flaky Report",
        actor="flaky",
        trigger="cron",
        cron="*/5 * * * *",
        max_retries=2,
        timezone="Europe/Berlin",
        max_runtime=timedelta(minutes=3),
        **FAST,
    )
    rig.schedules(s)
    rig.h.start()
    fire = rig.h.fire(s)
    assert rig.h.wait_fire(fire).status == "succeeded"
    rig.settle()
    time.sleep(0.3)
    sentry_sdk.flush(5)

    assert slack_server.requests == []
    assert rig.incidents() == []
    assert sentry_server.items("event") == []  # the retried attempt is not an error
    checkins = sentry_server.items("check_in")
    assert [c["status"] for c in checkins] == ["in_progress", "ok"]
    assert checkins[0]["monitor_slug"] == "flaky-report"
    assert checkins[0]["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "*/5 * * * *"},
        "timezone": "Europe/Berlin",
        "failure_issue_threshold": 1,
        "max_runtime": 3,
    }


# -- folding, reminder, recovery ---------------------------------------------------------


def test_repeats_fold_into_one_incident_with_a_reminder_then_one_recovery(
    rig_factory: Callable[..., Rig], slack_server: SlackServer
) -> None:
    rig = rig_factory(slack_webhook_url=slack_server.url, alert_reminder=1.5)
    fail = {"on": True}

    @rig.h.actor("sometimes")
    def sometimes() -> None:
        if fail["on"]:
            raise KeyError("missing row")

    s = spec("every-minute", "sometimes", max_retries=0)
    rig.schedules(s)
    rig.h.start()

    for _ in range(3):  # three failed fires in a row: one message
        rig.h.wait_fire(rig.h.fire(s), ("failed",))
        rig.settle()
    assert len(slack_server.messages) == 1
    [inc] = rig.incidents()
    assert inc.count == 3

    # Past the reminder interval: the next failure reminds once.
    rig.alerter.clock = lambda: utcnow() + timedelta(seconds=1.6)
    rig.h.wait_fire(rig.h.fire(s), ("failed",))
    rig.settle()
    rig.h.wait_fire(rig.h.fire(s), ("failed",))
    rig.settle()
    assert len(slack_server.messages) == 2
    assert "still open" in repr(slack_server.messages[1])
    assert "4 occurrences folded" in repr(slack_server.messages[1])  # the reminder, at the 4th
    assert rig.incidents()[0].count == 5

    fail["on"] = False
    ok = rig.h.fire(s)
    assert rig.h.wait_fire(ok).status == "succeeded"
    watchdog = Watchdog(
        rig.h.engine,
        {s.name: s},
        rig.alerter,
        rig.settings,
        liveness_for(rig.settings, rig.h.engine),
    )
    report = watchdog.check()
    rig.settle()
    assert report.resolved == [inc.id]
    assert len(slack_server.messages) == 3
    recovery = slack_server.messages[2]
    assert "every-minute recovered" in recovery["text"]
    [inc] = rig.incidents()
    assert inc.resolved_at is not None and inc.recovery_notified_at is not None

    watchdog.check()  # nothing more to say
    rig.settle()
    assert len(slack_server.messages) == 3

    fail["on"] = True  # a new failure opens a new incident
    rig.h.wait_fire(rig.h.fire(s), ("failed",))
    rig.settle()
    assert len(slack_server.messages) == 4
    assert [i.resolved_at is None for i in rig.incidents()] == [False, True]


# -- delivery: 429, down, muted, per-schedule webhook -------------------------------------


def test_slack_429_is_retried_after_retry_after(slack_server: SlackServer) -> None:
    slack_server.rate_limit_times = 1
    slack_server.retry_after = 1
    started = time.monotonic()
    assert SlackSender(slack_server.url).post(slack_server.url, {"text": "hello"})
    assert time.monotonic() - started >= 1.0
    assert [r["accepted"] for r in slack_server.requests] == [False, True]


def test_slack_429_with_a_long_retry_after_is_left_for_later(slack_server: SlackServer) -> None:
    slack_server.rate_limit_times = 5
    slack_server.retry_after = 3600
    started = time.monotonic()
    assert not SlackSender(slack_server.url).post(slack_server.url, {"text": "hello"})
    assert time.monotonic() - started < 5
    assert len(slack_server.requests) == 1


def test_slack_down_does_not_hurt_the_job_and_is_delivered_later(
    rig_factory: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    down = SlackServer()
    down_url = down.url
    down.close()  # nothing listens there now
    rig = rig_factory(slack_webhook_url=down_url)
    _failing(rig, "fails_fast")
    ran: list[int] = []

    @rig.h.actor("fine")
    def fine() -> None:
        ran.append(1)

    bad = spec("bad", "fails_fast", max_retries=0)
    good = spec("good", "fine")
    rig.schedules(bad, good)
    rig.h.start()

    started = time.monotonic()
    failed = rig.h.fire(bad)
    succeeded = rig.h.fire(good)
    assert rig.h.wait_fire(failed).status == "failed"
    assert rig.h.wait_fire(succeeded).status == "succeeded"
    assert time.monotonic() - started < 5  # the job path never waited for Slack
    rig.settle()
    [inc] = rig.incidents()
    assert inc.last_notified_at is None  # owed

    # Slack is back: the watchdog's outbox pass delivers the owed message once.
    back = SlackServer()
    try:
        rig.alerter.slack.default_url = back.url
        watchdog = Watchdog(
            rig.h.engine,
            {bad.name: bad, good.name: good},
            rig.alerter,
            rig.settings,
            liveness_for(rig.settings, rig.h.engine),
        )
        watchdog.check(utcnow() + timedelta(seconds=60))
        rig.settle()
        assert len(back.messages) == 1 and "bad failed" in back.messages[0]["text"]
        assert rig.incidents()[0].last_notified_at is not None
        watchdog.check(utcnow() + timedelta(seconds=60))
        rig.settle()
        assert len(back.messages) == 1
    finally:
        back.close()
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "slack alert not delivered" in log
    assert down_url.rsplit("/", 1)[1] not in log + caplog.text


def test_muted_schedule_and_per_schedule_webhook(
    rig_factory: Callable[..., Rig],
    slack_server: SlackServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.schedules.spec import AlertPolicy

    team = SlackServer()
    try:
        monkeypatch.setenv("TEAM_PAYMENTS_HOOK", team.url)
        rig = rig_factory(slack_webhook_url=slack_server.url)
        _failing(rig, "fails_too")
        muted = spec("muted", "fails_too", alerts=AlertPolicy(slack=False))
        routed = spec("routed", "fails_too", alerts=AlertPolicy(webhook_env="TEAM_PAYMENTS_HOOK"))
        rig.schedules(muted, routed)
        rig.h.start()
        rig.h.wait_fire(rig.h.fire(muted), ("failed",))
        rig.h.wait_fire(rig.h.fire(routed), ("failed",))
        rig.settle()
        assert slack_server.messages == []
        assert [m["text"].split(" ")[0] for m in team.messages] == ["routed"]
        # Muted incidents are still recorded (and count as notified: nothing is owed).
        kinds = {(i.schedule, i.last_notified_at is not None) for i in rig.incidents()}
        assert kinds == {("muted", True), ("routed", True)}
    finally:
        team.close()


def _assert_no_secrets(
    caplog: pytest.LogCaptureFixture, slack: SlackServer, sentry: SentryServer
) -> None:
    """No raw log record (before any redacting filter) carries a secret."""
    lines = [r.getMessage() for r in caplog.records] + [caplog.text]
    for r in caplog.records:
        if r.exc_info:
            lines.append(logging.Formatter().formatException(r.exc_info))
    text = "\n".join(lines)
    assert slack.secret not in text
    assert sentry.key not in text
    assert "/services/T0AAAA/B0BBBB" not in text
