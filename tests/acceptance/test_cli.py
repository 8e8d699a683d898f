"""The CLI as users run it: check, next, status, history, trigger, pause, resume."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime

import redis

from services.constants import LEASE_KEY
from tests.acceptance.conftest import Cronwork
from tests.conftest import REDIS_SERVER
from tests.waiting import wait_for

GOOD = """
    imports: [acceptance_actors]
    schedules:
      ticker:
        actor: tick
        every: 1s
        max_retries: 0
      weekly:
        actor: tick
        cron: "0 8 * * 1"
        timezone: Europe/Berlin
"""

BAD = """
    imports: [acceptance_actors]
    schedules:
      nightly:
        actor: tick
        cron: "61 * * * *"
      lunch:
        actor: no_such_actor
        every: 10x
        colour: blue
      nightly:
        actor: tick
        every: 1m
"""


def test_check_accepts_a_good_file(cronwork: Cronwork) -> None:
    cronwork.write_schedules(GOOD)
    out = cronwork.run("check")
    assert out.returncode == 0, out.stderr
    assert "2 schedule(s) OK" in out.stdout


def test_check_refuses_a_bad_file_with_every_problem_located(cronwork: Cronwork) -> None:
    cronwork.write_schedules(BAD)
    out = cronwork.run("check")
    assert out.returncode == 1
    err = out.stderr
    assert "Traceback" not in err
    assert "schedules.yaml:6: schedule 'nightly': bad cron expression '61 * * * *'" in err
    assert "schedules.yaml:9: schedule 'lunch':" in err and "10x" in err
    assert "schedules.yaml:10: schedule 'lunch': unknown key 'colour'" in err
    assert "duplicate schedule name 'nightly'" in err
    assert "nothing applied" in err


def test_scheduler_and_worker_refuse_to_start_on_a_bad_file(cronwork: Cronwork) -> None:
    cronwork.write_schedules(BAD)
    for command in ("scheduler", "worker", "up"):
        out = cronwork.run(command, timeout=30)
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        assert "bad cron expression" in out.stderr
        assert "Traceback" not in out.stderr


def test_unknown_actor_is_refused_by_check(cronwork: Cronwork) -> None:
    cronwork.write_schedules(
        """
        imports: [acceptance_actors]
        schedules:
          lunch:
            actor: no_such_actor
            every: 1h
        """
    )
    out = cronwork.run("check")
    assert out.returncode == 1
    assert "schedules.yaml:5: schedule 'lunch': actor 'no_such_actor' is not defined" in out.stderr


def test_next_prints_utc_and_local_times(cronwork: Cronwork) -> None:
    cronwork.write_schedules(GOOD)
    out = cronwork.run("next", "weekly", "-n", "3", "--after", "2026-03-20T00:00:00Z", "--json")
    assert out.returncode == 0, out.stderr
    # Mondays 08:00 Berlin: CET (UTC+1) until 29 March, CEST (UTC+2) after.
    assert json.loads(out.stdout) == [
        "2026-03-23T07:00:00Z",
        "2026-03-30T06:00:00Z",
        "2026-04-06T06:00:00Z",
    ]
    text = cronwork.run("next", "weekly", "-n", "1", "--after", "2026-03-20T00:00:00Z")
    assert "2026-03-23T07:00:00Z" in text.stdout and "08:00:00 CET" in text.stdout
    unknown = cronwork.run("next", "nope")
    assert unknown.returncode == 1 and "no schedule named 'nope'" in unknown.stderr


def test_run_pause_resume_status_history(cronwork: Cronwork) -> None:
    cronwork.write_schedules(GOOD)
    assert cronwork.run("migrate").returncode == 0
    cronwork.start("worker", "--processes", "1", "--threads", "2", name="worker")
    scheduler = cronwork.start("scheduler", name="sched-1")

    def status() -> dict:
        out = cronwork.run("status", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def succeeded(name: str) -> int:
        out = cronwork.run("history", "--schedule", name, "--limit", "200", "--json")
        return sum(1 for f in json.loads(out.stdout) if f["status"] == "succeeded")

    wait_for(lambda: succeeded("ticker") >= 2, timeout=30, what="ticker fires to succeed")
    data = status()
    assert data["leader"]["instance_id"] == "sched-1"
    by_name = {s["name"]: s for s in data["schedules"]}
    assert by_name["ticker"]["last_fire"]["status"] in ("succeeded", "enqueued", "running")
    assert by_name["weekly"]["timezone"] == "Europe/Berlin"
    assert by_name["weekly"]["next_run"].endswith(("T07:00:00Z", "T06:00:00Z"))

    # Pause: no new fires of ticker; it survives a scheduler restart. A reason is required.
    refused = cronwork.run("pause", "ticker")
    assert refused.returncode == 2 and "--reason" in refused.stderr
    assert cronwork.run("pause", "ticker", "--reason", "noisy in staging").returncode == 0
    cronwork.stop(scheduler)
    paused_at = datetime.now(UTC)
    scheduler = cronwork.start("scheduler", name="sched-2")
    wait_for(
        lambda: (status()["leader"] or {}).get("instance_id") == "sched-2",
        timeout=20,
        what="new leader",
    )
    time.sleep(3)  # three ticks of a 1 s schedule, had it not been paused
    out = cronwork.run("history", "--schedule", "ticker", "--limit", "5", "--json")
    newest = datetime.fromisoformat(
        json.loads(out.stdout)[0]["scheduled_for"].replace("Z", "+00:00")
    )
    assert newest <= paused_at, "a paused schedule fired"
    assert status()["schedules"][0]["paused"] is True

    # Manual trigger of a paused schedule still runs (an operator asked for it).
    trig = cronwork.run("trigger", "weekly")
    assert trig.returncode == 0 and "enqueued" in trig.stdout
    wait_for(
        lambda: any(
            f["kind"] == "manual" and f["status"] == "succeeded"
            for f in json.loads(cronwork.run("history", "--schedule", "weekly", "--json").stdout)
        ),
        timeout=30,
        what="the manual fire to succeed",
    )

    assert cronwork.run("resume", "ticker").returncode == 0
    audit = json.loads(cronwork.run("audit", "--json").stdout)
    assert [(e["action"], e["schedule"], e["reason"]) for e in audit] == [
        ("resume", "ticker", None),
        ("trigger", "weekly", None),
        ("pause", "ticker", "noisy in staging"),
    ]
    assert all(e["who"].startswith("cli:") for e in audit)
    assert "noisy in staging" in cronwork.run("audit", "--schedule", "ticker").stdout
    before = succeeded("ticker")
    wait_for(
        lambda: succeeded("ticker") >= before + 2,
        timeout=30,
        what="ticker to fire again after resume",
    )
    cronwork.stop(scheduler, signal.SIGTERM)
    table = cronwork.run("status")
    assert table.returncode == 0 and "ticker" in table.stdout and "every 1s" in table.stdout


def test_up_with_urls_uses_postgres_and_redis(cronwork: Cronwork, redis_prefix: str) -> None:
    cronwork.write_schedules(GOOD)
    up = cronwork.start("up", name="laptop")

    def succeeded() -> int:
        out = cronwork.run("history", "--schedule", "ticker", "--json")
        return sum(1 for f in json.loads(out.stdout or "[]") if f["status"] == "succeeded")

    wait_for(succeeded, timeout=30, what="a fire to succeed through Postgres and Redis")
    client = redis.Redis.from_url(REDIS_SERVER)
    holder = json.loads(client.get(f"{redis_prefix}:{LEASE_KEY}") or "{}")
    assert holder.get("instance_id") == "laptop"
    cronwork.stop(up)
    assert up.returncode == 0
    log = cronwork.log("laptop")
    assert "single instance only" not in log
    assert client.get(f"{redis_prefix}:{LEASE_KEY}") is None  # released on SIGTERM


def test_pause_until_resumes_by_itself(cronwork: Cronwork) -> None:
    cronwork.write_schedules(GOOD)
    assert cronwork.run("migrate").returncode == 0
    bad = cronwork.run("pause", "ticker", "--reason", "x", "--until", "yesterday")
    assert bad.returncode == 1 and "bad time 'yesterday'" in bad.stderr
    past = cronwork.run("pause", "ticker", "--reason", "x", "--until", "2020-01-01T00:00:00")
    assert past.returncode == 1 and "not in the future" in past.stderr
    out = cronwork.run("pause", "ticker", "--reason", "deploy window", "--until", "3s")
    assert out.returncode == 0 and "fires again by itself" in out.stdout
    cronwork.start("up", name="laptop")

    def auto_resumed() -> bool:
        entries = json.loads(cronwork.run("audit", "--json").stdout or "[]")
        return any(e["action"] == "auto_resume" for e in entries)

    wait_for(auto_resumed, timeout=30, what="the pause to run out and be audited")
    entries = json.loads(cronwork.run("audit", "--schedule", "ticker", "--json").stdout)
    assert (entries[0]["action"], entries[0]["who"]) == ("auto_resume", "cronwork")
    assert [e["action"] for e in entries].count("auto_resume") == 1

    def fired_after_pause() -> bool:
        data = json.loads(cronwork.run("history", "--schedule", "ticker", "--json").stdout)
        return any(f["status"] == "succeeded" for f in data)

    wait_for(fired_after_pause, timeout=30, what="ticker to fire again by itself")
    status = json.loads(cronwork.run("status", "--json").stdout)
    assert status["schedules"][0]["paused"] is False


def test_next_follows_cron_through_daylight_saving(cronwork: Cronwork) -> None:
    cronwork.write_schedules(
        """
        imports: [acceptance_actors]
        schedules:
          nightly:
            actor: tick
            cron: "30 2 * * *"
            timezone: Europe/Berlin
        """
    )
    spring = cronwork.run("next", "nightly", "-n", "3", "--after", "2026-03-28T00:00:00Z", "--json")
    # 29 March: 02:30 does not exist in Berlin; it runs once, at the change (03:00 CEST).
    assert json.loads(spring.stdout) == [
        "2026-03-28T01:30:00Z",
        "2026-03-29T01:00:00Z",
        "2026-03-30T00:30:00Z",
    ]
    autumn = cronwork.run("next", "nightly", "-n", "3", "--after", "2026-10-24T00:00:00Z", "--json")
    # 25 October: 02:30 happens twice in Berlin; it runs once, the first time.
    assert json.loads(autumn.stdout) == [
        "2026-10-24T00:30:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-26T01:30:00Z",
    ]


def test_run_sends_tracked_adhoc_runs_and_history_filters_them(cronwork: Cronwork) -> None:
    cronwork.write_schedules(GOOD)
    assert cronwork.run("migrate").returncode == 0

    first = cronwork.run("run", "slow", "--key", "warm-cache-1", "--", "0.01")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("sent slow: fire ") and first.stdout.rstrip().endswith(
        "enqueued"
    )
    again = cronwork.run("run", "slow", "--key", "warm-cache-1", "--json", "--", "0.01")
    assert again.returncode == 0, again.stderr
    dup = json.loads(again.stdout)
    fire_id = int(first.stdout.split("fire ")[1].split(",")[0])
    assert (dup["duplicate"], dup["fire_id"], dup["status"]) == (True, fire_id, "enqueued")
    text = cronwork.run("run", "slow", "--key", "warm-cache-1")
    assert (
        text.stdout.strip() == f"duplicate of fire {fire_id} (enqueued): key warm-cache-1 is held"
    )

    failing = cronwork.run("run", "fails_fast", "--kwargs", '{"month": "2026-11"}', "--", '"acme"')
    assert failing.returncode == 0, failing.stderr

    unknown = cronwork.run("run", "no_such_actor")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "no actor named 'no_such_actor'" in unknown.stderr and "fails_fast" in unknown.stderr
    bad = cronwork.run("run", "slow", "--", "acme")
    assert bad.returncode == 2 and "expected a JSON value" in bad.stderr
    assert bad.stderr.count("\n") == 1

    cronwork.start("worker", "--processes", "1", "--threads", "2", name="worker")

    def fires(*filters: str) -> list[dict]:
        out = cronwork.run("history", *filters, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    wait_for(
        lambda: (
            len(fires("--kind", "adhoc", "--status", "succeeded")) == 1
            and len(fires("--actor", "fails_fast", "--status", "failed")) == 1
        ),
        timeout=30,
        what="both ad-hoc runs to end",
    )
    [ok] = fires("--actor", "slow", "--since", "2026-01-01")
    assert (ok["id"], ok["kind"], ok["actor"], ok["idempotency_key"]) == (
        fire_id,
        "adhoc",
        "slow",
        "warm-cache-1",
    )
    assert [a["status"] for a in ok["attempts"]] == ["succeeded"]
    [failed] = fires("--status", "failed", "--kind", "adhoc", "--since", "2026-11-01")
    assert failed["schedule"] == "adhoc:fails_fast"
    assert failed["error"] == "RuntimeError: no invoice for acme 2026-11"
    assert [a["status"] for a in failed["attempts"]] == ["retrying", "failed"]
    assert fires("--actor", "tick") == []
    assert fires("--kind", "manual") == []
    assert fires("--since", "2999-01-01") == []
    table = cronwork.run("history", "--kind", "adhoc")
    assert "adhoc:fails_fast" in table.stdout and "KEY" in table.stdout
    assert "warm-cache-1" in table.stdout
