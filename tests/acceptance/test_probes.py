"""Health endpoints, `cronwork worker --check` and SIGTERM behaviour, via the real CLI.

What the Helm chart and docker compose probe: /healthz, /readyz, /metrics on
CRONWORK_HTTP_PORT of `cronwork scheduler` and `cronwork worker`, and the worker's
exec probe. Signals go to the main process only, as Kubernetes (or tini) sends them.
"""

from __future__ import annotations

import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.acceptance.conftest import Cronwork, free_port, get, leader_of
from tests.conftest import REDIS_SERVER
from tests.waiting import wait_for

SCHEDULES = """
    imports: [acceptance_actors]
    schedules:
      every-second:
        actor: tick
        every: 1s
        max_retries: 0
      slow-job:
        actor: slow
        every: 1h
        start: "2999-01-01T00:00:00Z"
        kwargs: {seconds: 4}
        max_retries: 0
"""


def sample(body: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_scheduler_and_worker_probes_and_worker_check(cronwork: Cronwork, tmp_path: Path) -> None:
    cronwork.write_schedules(SCHEDULES)
    assert cronwork.run("migrate").returncode == 0
    beat = str(tmp_path / "worker.heartbeat")
    sport, wport = free_port(), free_port()
    worker = cronwork.start(
        "worker",
        "--processes",
        "2",
        "--threads",
        "2",
        name="worker",
        CRONWORK_HTTP_PORT=str(wport),
        CRONWORK_HEARTBEAT_FILE=beat,
    )
    cronwork.start("scheduler", name="sched", CRONWORK_HTTP_PORT=str(sport))

    for port, what in ((sport, "scheduler"), (wport, "worker")):
        wait_for(
            partial(lambda p: get(p, "/healthz")[0] == 200, port),
            timeout=30,
            what=f"{what} /healthz",
        )
        status, body = get(port, "/readyz")
        assert (status, body) == (200, "ok: database ok; redis ok\n"), what

    def fired(port: int, metric: str, **labels: str) -> float:
        return sample(get(port, "/metrics")[1], metric, **labels)

    # The scheduler counts its fires; the worker's parent aggregates its two children.
    wait_for(
        lambda: fired(sport, "cronwork_fires_total", schedule="every-second", outcome="won") >= 2,
        timeout=20,
        what="the scheduler's fire counter",
    )
    assert fired(sport, "cronwork_scheduler_leader") == 1.0
    wait_for(
        lambda: (
            fired(wport, "cronwork_attempts_total", schedule="every-second", status="succeeded")
            >= 2
        ),
        timeout=20,
        what="the worker's attempt counter",
    )
    body = get(wport, "/metrics")[1]
    assert sample(body, "cronwork_attempt_duration_seconds_count", schedule="every-second") >= 2
    assert sample(body, "cronwork_last_success_timestamp_seconds", schedule="every-second") > (
        time.time() - 60
    )

    check = cronwork.run("worker", "--check", CRONWORK_HEARTBEAT_FILE=beat)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "heartbeat" in check.stdout

    # To the main process only, as Kubernetes and tini do (Cronwork.stop signals the whole
    # group: Dramatiq's children would get SIGTERM twice, and a second one kills them).
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, cronwork.log("worker")[-2000:]
    # Each child's last lines reach the log through the pipe Dramatiq closes at its exit.
    assert cronwork.log("worker").count("Worker has been shut down") == 2

    def stale() -> bool:
        return cronwork.run("worker", "--check", CRONWORK_HEARTBEAT_FILE=beat).returncode == 1

    # Heartbeat interval 1 s (the fixture): stale after 3 s.
    started = time.monotonic()
    wait_for(
        stale, timeout=10, what="`worker --check` to fail after the worker stopped", interval=0.5
    )
    assert time.monotonic() - started < 8
    out = cronwork.run("worker", "--check", CRONWORK_HEARTBEAT_FILE=beat).stdout
    assert "old" in out and "limit 3s" in out
    missing = cronwork.run("worker", "--check", CRONWORK_HEARTBEAT_FILE=str(tmp_path / "none"))
    assert missing.returncode == 1 and "no worker heartbeat" in missing.stdout


def test_sigterm_to_leader_hands_over_at_once(cronwork: Cronwork, redis_prefix: str) -> None:
    cronwork.write_schedules(SCHEDULES)
    assert cronwork.run("migrate").returncode == 0
    client = redis.Redis.from_url(REDIS_SERVER)
    # A long TTL: only an explicit release can explain a quick takeover.
    procs = {
        name: cronwork.start("scheduler", name=name, CRONWORK_LEASE_TTL="30")
        for name in ("sched-a", "sched-b")
    }
    leader = wait_for(lambda: leader_of(client, redis_prefix), timeout=30, what="a leader")
    assert isinstance(leader, str)
    time.sleep(1.0)  # both up: the standby polls the lease
    standby = next(n for n in procs if n != leader)
    procs[leader].send_signal(signal.SIGTERM)
    sent = time.monotonic()
    wait_for(
        lambda: leader_of(client, redis_prefix) == standby,
        timeout=5,
        what="the standby to lead",
        interval=0.02,
    )
    took = time.monotonic() - sent
    assert took < 1.5, f"takeover took {took:.2f}s"
    assert procs[leader].wait(10) == 0
    assert "shutting down" in cronwork.log(leader)


def test_sigterm_to_worker_finishes_in_flight_and_takes_no_more(
    cronwork: Cronwork, tmp_path: Path
) -> None:
    cronwork.write_schedules(SCHEDULES)
    assert cronwork.run("migrate").returncode == 0
    engine = create_engine(cronwork.env["CRONWORK_DATABASE_URL"])

    def fires() -> list[tuple[int, str]]:
        with engine.connect() as conn:
            rows = conn.execute(
                text("select id, status from cronwork_fires where schedule='slow-job' order by id")
            ).all()
        return [(r.id, r.status) for r in rows]

    worker = cronwork.start(
        "worker",
        "--processes",
        "1",
        "--threads",
        "2",
        name="worker",
        CRONWORK_HEARTBEAT_FILE=str(tmp_path / "hb"),
    )
    wait_for(lambda: (tmp_path / "hb").exists(), timeout=30, what="the worker to boot")
    first = cronwork.run("trigger", "slow-job")
    assert first.returncode == 0, first.stderr
    wait_for(
        lambda: [s for _, s in fires()] == ["running"], timeout=20, what="the slow fire to start"
    )

    worker.send_signal(signal.SIGTERM)
    wait_for(
        lambda: "Stopping worker process" in cronwork.log("worker"),
        timeout=10,
        what="the stop to begin",
    )
    time.sleep(0.2)
    # Sent after the stop began: this one must wait for the next worker.
    second = cronwork.run("trigger", "slow-job")
    assert second.returncode == 0, second.stderr
    try:
        code = worker.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(cronwork.log("worker")[-3000:]) from None
    assert code == 0, cronwork.log("worker")[-3000:]

    (_, status_first), (_, status_second) = fires()
    assert status_first == "succeeded", cronwork.log("worker")[-3000:]
    # The second was sent while the consumer was stopping: it was either left in the
    # queue for the next worker or fetched just before the consumer stopped, and then
    # finished too. Never cut off, never lost.
    assert status_second in ("enqueued", "succeeded")
    with engine.connect() as conn:
        attempts = conn.execute(
            text("select status from cronwork_attempts where schedule = 'slow-job'")
        ).all()
    engine.dispose()
    expected = 1 if status_second == "enqueued" else 2
    assert [a.status for a in attempts] == ["succeeded"] * expected
