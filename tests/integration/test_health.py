"""/healthz, /readyz and /metrics of a real SchedulerService on real Postgres and Redis.

The HTTP server is the real one (services.web.health.HealthServer) on an ephemeral port;
requests go over TCP with urllib.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from services import metrics
from services.broker import sender_broker
from services.constants import LEASE_KEY
from services.errors import CronworkError
from services.scheduler.lease import RedisLease
from services.scheduler.service import SchedulerService
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, request
from services.web.health import HealthServer, Readiness
from tests.integration.conftest import DEAD_REDIS, fire_rows, make_settings, spec
from tests.waiting import wait_for


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


@dataclass
class Running:
    service: SchedulerService
    thread: threading.Thread
    server: HealthServer
    settings: Settings
    schedule: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"


@pytest.fixture
def running(pg_url: str, redis_prefix: str, redis_client: redis.Redis) -> Iterator[Running]:
    name = f"health-{uuid.uuid4().hex[:8]}"  # metrics are process-global: a name of its own
    settings = make_settings(redis_prefix, database_url=pg_url, instance_id="svc-health")
    eng = make_engine(pg_url)
    broker = sender_broker(settings)
    lease = RedisLease(
        redis_client, f"{redis_prefix}:{LEASE_KEY}", settings.lease_ttl, settings.instance_id
    )
    service = SchedulerService(settings, eng, broker, {name: spec(name)}, lease)
    server = HealthServer(
        "127.0.0.1", 0, live=service.health, ready=Readiness(settings, timeout=2)
    ).start()
    thread = threading.Thread(target=service.run, name="svc-health", daemon=True)
    yield Running(service, thread, server, settings, name)
    service.stop()
    if thread.is_alive():
        thread.join(timeout=10)
    server.stop()
    broker.close()
    eng.dispose()


def test_probes_and_fire_metrics_of_a_leader(
    running: Running, engine: Engine, redis_client: redis.Redis, redis_prefix: str
) -> None:
    # Another replica holds the lease: this one is a healthy, ready standby.
    other = RedisLease(redis_client, f"{redis_prefix}:{LEASE_KEY}", 5, "other")
    assert other.acquire()
    running.thread.start()
    time.sleep(0.5)
    assert not running.service.leading
    assert get(running.url("/healthz")) == (200, "ok: standby\n")
    status, body = get(running.url("/readyz"))
    assert (status, body) == (200, "ok: database ok; redis ok\n")

    other.release()
    wait_for(lambda: running.service.leading, timeout=5, what="the lease")
    assert get(running.url("/healthz")) == (200, "ok: leading\n")
    name = running.schedule
    rows = wait_for(lambda: fire_rows(engine, name), timeout=5, what="a fire")

    def won() -> float:
        text = get(running.url("/metrics"))[1]
        return (
            sample(text, "cronwork_fires_total", schedule=name, kind="scheduled", outcome="won")
            or 0.0
        )

    wait_for(lambda: won() >= 1, timeout=5, what="the fire counter")
    status, text = get(running.url("/metrics"))
    assert status == 200
    assert sample(text, "cronwork_scheduler_leader") == 1.0
    assert (sample(text, "cronwork_lease_changes_total", change="acquired") or 0) >= 1
    assert (sample(text, "cronwork_enqueue_lag_seconds_count", kind="scheduled") or 0) >= 1

    # A second claimer of a time already fenced loses: counted as a conflict.
    before = sample(text, "cronwork_fires_total", schedule=name, outcome="conflict") or 0.0
    again = request(running.service.specs[name], rows[0].scheduled_for, "scheduled")
    assert Fence(engine, "rival").claim([again]) == []
    text = get(running.url("/metrics"))[1]
    assert sample(text, "cronwork_fires_total", schedule=name, outcome="conflict") == before + 1

    # Stepping down (stop) releases the lease and zeroes the leader gauge.
    running.service.stop()
    running.thread.join(timeout=10)
    assert redis_client.get(f"{redis_prefix}:{LEASE_KEY}") is None
    text = get(running.url("/metrics"))[1]
    assert sample(text, "cronwork_scheduler_leader") == 0.0
    assert (sample(text, "cronwork_lease_changes_total", change="released") or 0) >= 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_apscheduler_thread_fails_liveness(running: Running) -> None:
    running.thread.start()
    wait_for(lambda: running.service.leading, timeout=5, what="the lease")
    assert get(running.url("/healthz"))[0] == 200
    scheduler = running.service.scheduler
    assert scheduler is not None

    # An exception that FencedScheduler's guard does not catch ends APScheduler's thread
    # for real, while the scheduler object still says it runs.
    def die() -> bool:
        raise SystemExit("simulated crash of the scheduler thread")

    scheduler.may_fire = die
    scheduler.wakeup()
    wait_for(lambda: not scheduler._thread.is_alive(), timeout=5, what="the thread to die")
    assert scheduler.running
    # The service does not sit on the lease with a dead loop: it steps down and leads
    # again with a fresh APScheduler, so firing resumes without a restart.
    wait_for(
        lambda: running.service.leading and running.service.scheduler is not scheduler,
        timeout=5,
        what="a fresh APScheduler",
    )
    assert get(running.url("/healthz")) == (200, "ok: leading\n")
    # Liveness sees a dead thread even though the scheduler object claims to run.
    stale = SchedulerService.__new__(SchedulerService)
    stale.last_loop = time.monotonic()
    stale.scheduler = scheduler
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    scheduler._thread = dead  # shutdown() dropped it; put a dead one back for the check
    assert stale.health() == (False, "APScheduler thread is dead")


def test_readiness_names_what_is_down_without_urls(pg_url: str, redis_prefix: str) -> None:
    dead_pg = "postgresql+psycopg2://cw:s3cret-pw@127.0.0.1:1/nowhere"
    cases = {
        "redis": make_settings(redis_prefix, redis_url=DEAD_REDIS, database_url=pg_url),
        "database": make_settings(redis_prefix, database_url=dead_pg),
    }
    for down, settings in cases.items():
        server = HealthServer(
            "127.0.0.1", 0, live=lambda: (True, "ok"), ready=Readiness(settings, timeout=2)
        ).start()
        try:
            started = time.monotonic()
            status, body = get(f"http://127.0.0.1:{server.port}/readyz")
            assert time.monotonic() - started < 5
        finally:
            server.stop()
        assert status == 503, body
        assert body.startswith("fail: ") and f"{down} unreachable" in body
        up = "database" if down == "redis" else "redis"
        assert f"{up} ok" in body
        for secret in ("s3cret", "127.0.0.1", "redis://", "postgresql"):
            assert secret not in body


def test_unknown_path_and_metric_helpers_never_raise(running: Running) -> None:
    assert get(running.url("/nope"))[0] == 404
    # Garbage in: the helpers swallow it (a metric must never break a fire or a job).
    metrics.record_claim([object()], [object()])
    metrics.record_enqueued({}, None)  # type: ignore[arg-type]
    metrics.record_attempt(running.schedule, "succeeded", float("nan"))
    metrics.record_resent("many")  # type: ignore[arg-type]


def test_a_busy_port_is_refused_with_what_to_set() -> None:
    # What a second scheduler on one host meets when both keep the default port.
    with socket.socket() as first:
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        with pytest.raises(CronworkError) as caught:
            HealthServer("127.0.0.1", port, live=lambda: (True, "ok"), ready=lambda: (True, "ok"))
    assert str(caught.value) == (
        f"cannot serve HTTP on 127.0.0.1:{port}: Address already in use; each cronwork process "
        "on one host needs a port of its own: set CRONWORK_HTTP_PORT to a free port, or to 0 "
        "to serve no HTTP"
    )
