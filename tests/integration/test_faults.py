"""Fault tests: a leading SchedulerService while its Postgres or Redis goes away and comes back.

Tests that kill or restart a server start a throwaway one of their own from the
installed binaries (never the shared servers on 5432/6379): Postgres via
initdb/pg_ctl as the ``postgres`` OS user (it refuses to run as root), Redis via
``redis-server`` without persistence. Each runs on a free port on 127.0.0.1 in a
temporary directory that is removed afterwards, whatever happens.

The service is built as ``cronwork scheduler`` builds it (services.cli.processes.scheduler_service:
RedisLease with the CLI's socket timeout) and runs ``run()`` on a thread.
"""

from __future__ import annotations

import glob
import itertools
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import dramatiq
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine

from services.broker import sender_broker
from services.cli.processes import scheduler_service
from services.scheduler.service import SchedulerService
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, request
from services.store.migrate import upgrade
from tests.conftest import require
from tests.integration.conftest import fire_rows, make_settings, spec, wait_for

pytestmark = pytest.mark.integration

ONE_SECOND = timedelta(seconds=1)
#: How long a server stays down in these tests: longer than the lease TTL below.
DOWN_SECONDS = 3.0
#: Lease TTL of the Redis-restart test (renewed every TTL/3).
SHORT_TTL = 1.5


# -- throwaway servers -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory that has everything we run."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda d: float(d.parent.name) if d.parent.name.replace(".", "").isdigit() else 0.0,
    )
    for bindir in reversed(found):
        if all((bindir / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


class ThrowawayPostgres:
    """A private PostgreSQL cluster (trust auth, fsync off) that a test may stop and start."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cw-fault-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        # initdb and postgres refuse root: run them as the postgres user when we are root.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        proc = subprocess.run(
            [*self.as_user, *args],
            cwd=self.root,  # the postgres user must be able to stat its working directory
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            output = f"{proc.stdout}{proc.stderr}"
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {output}\n{self.log_tail()}")

    def log_tail(self) -> str:
        with suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with suppress(Exception):
            self.stop("immediate")
        # If pg_ctl could not stop it, kill the postmaster by its pid file.
        with suppress(Exception):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


class ThrowawayRedis:
    """A private redis-server (no persistence) that a test may SIGKILL and restart."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cw-fault-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with open(self.root / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.root),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.root / "redis.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"redis-server exited ({self.proc.returncode}):\n{log}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(up, timeout=10, what=f"redis-server on port {self.port}")
        finally:
            client.close()

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing is answered."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; the data in it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def destroy(self) -> None:
        with suppress(Exception):
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    bindir = _pg_bindir()
    require(bindir is not None, "PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl)")
    assert bindir is not None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            require(False, "the 'postgres' OS user (initdb refuses root)")
        require(shutil.which("runuser") is not None, "runuser (to run initdb as postgres)")
    server = ThrowawayPostgres(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    binary = shutil.which("redis-server")
    require(binary is not None, "the redis-server binary")
    assert binary is not None
    server = ThrowawayRedis(binary)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


# -- helpers -----------------------------------------------------------------------------


def by_name(*specs: ScheduleSpec) -> dict[str, ScheduleSpec]:
    return {s.name: s for s in specs}


@contextmanager
def running_service(
    settings: Settings, database_url: str, specs: dict[str, ScheduleSpec]
) -> Iterator[tuple[SchedulerService, threading.Thread]]:
    """A SchedulerService built as ``cronwork scheduler`` builds it, run() on a thread."""
    engine = make_engine(database_url)
    broker = sender_broker(settings)
    svc = scheduler_service(settings, broker, specs, engine)
    thread = threading.Thread(target=svc.run, name=settings.instance_id, daemon=True)
    thread.start()
    try:
        yield svc, thread
    finally:
        svc.stop()
        thread.join(timeout=30)
        broker.close()
        engine.dispose()
    assert not thread.is_alive(), "the service did not stop"


def gaps(times: list[datetime], step: timedelta) -> list[tuple[datetime, datetime]]:
    return [(a, b) for a, b in itertools.pairwise(times) if b - a != step]


def assert_consecutive(times: list[datetime]) -> None:
    assert len(times) == len(set(times)), f"duplicate scheduled times: {times}"
    assert not gaps(times, ONE_SECOND), f"gaps in the fires: {gaps(times, ONE_SECOND)}"


def queued_message_ids(client: redis.Redis, prefix: str, queue: str = "default") -> list[str]:
    """Dramatiq message ids (not Redis ones) of the messages waiting in ``queue``."""
    raw = client.hvals(f"{prefix}-dramatiq:{queue}.msgs")
    return [dramatiq.Message.decode(cast(bytes, v)).message_id for v in raw]


def firing_thread_alive(svc: SchedulerService) -> bool:
    sched = svc.scheduler
    thread = getattr(sched, "_thread", None)
    return sched is not None and thread is not None and thread.is_alive()


# -- 1. Postgres restarts under a leading scheduler ------------------------------------------


def test_postgres_restart_under_a_leader_loses_no_fire(
    throwaway_pg: ThrowawayPostgres, redis_prefix: str, redis_client: redis.Redis
) -> None:
    upgrade(throwaway_pg.url)
    s = spec("tick", catchup="all")
    settings = make_settings(
        redis_prefix,
        instance_id="svc-pg",
        database_url=throwaway_pg.url,
        lease_ttl=3.0,
        resend_after=1.0,
    )
    observer = make_engine(throwaway_pg.url)
    try:
        with running_service(settings, throwaway_pg.url, by_name(s)) as (svc, _):
            wait_for(lambda: len(fire_rows(observer, "tick")) >= 3, timeout=15, what="3 fires")
            assert svc.leading

            throwaway_pg.stop("fast")
            observer.dispose()  # its pooled connections died with the server
            down_until = time.monotonic() + DOWN_SECONDS
            # While the database is away both loops keep ticking: no wedged or dead thread
            # for a liveness probe to find (stepping down and standing by would be fine).
            while time.monotonic() < down_until:
                ok, why = svc.health(max_silence=2.5)
                assert ok, f"unhealthy while Postgres is down: {why}"
                time.sleep(0.1)
            throwaway_pg.start()
            up_at = datetime.now(UTC)

            def recovered() -> bool:
                rows = fire_rows(observer, "tick")
                return (
                    bool(rows)
                    and rows[-1].scheduled_for >= up_at + 2 * ONE_SECOND
                    and all(r.status == "enqueued" for r in rows)
                )

            wait_for(recovered, timeout=20, what="fires after the restart, all enqueued")
            ok, why = svc.health(max_silence=2.5)
            assert ok, why
            assert svc.leading and firing_thread_alive(svc)
            lease_changes = svc.lease_changes
        rows = fire_rows(observer, "tick")
    finally:
        observer.dispose()

    times = [r.scheduled_for for r in rows]
    # Every second from the first fire to the last is there, once: the seconds that came
    # due while Postgres was down were fired late, not dropped.
    assert_consecutive(times)
    assert times[-1] - times[0] >= timedelta(seconds=DOWN_SECONDS + 4)
    assert {r.status for r in rows} == {"enqueued"}
    late = [r for r in rows if r.created_at > r.scheduled_for + timedelta(seconds=2)]
    assert len(late) >= 2, "no fire was caught up after the outage"
    # Each row's message reached the broker (re-sends may duplicate one; the worker dedups).
    assert {r.message_id for r in rows} <= set(queued_message_ids(redis_client, redis_prefix))
    assert lease_changes >= 1


# -- 2. Redis restarts under a leading scheduler -------------------------------------------


def _freeze_just_before_a_fire(
    server: ThrowawayRedis, engine: Engine
) -> tuple[datetime, float, datetime]:
    """SIGSTOP Redis just before a fire second; once that fire's row is fenced, return
    when Redis froze (wall clock and monotonic) and the fire's scheduled time.

    A frozen Redis accepts connections but never answers, so neither a lease renewal
    that happens to be in flight nor the send of that fire can fail (and make the leader
    step down) before the fire is fenced: the leader fires on its own clock's idea of the
    lease, not on Redis'. The test then SIGKILLs the frozen server, which leaves that row
    pending, exactly the row the re-send must cover, on every run.
    """
    now = time.time()
    fire_at = math.ceil(now + 0.1)
    time.sleep(fire_at - 0.05 - now)
    frozen, frozen_mono = datetime.now(UTC), time.monotonic()
    server.freeze()
    due = datetime.fromtimestamp(fire_at, UTC)

    def fenced() -> list[Any]:
        return [r for r in fire_rows(engine, "tick") if r.scheduled_for == due]

    [row] = wait_for(fenced, timeout=SHORT_TTL, what=f"the fire at {due} to be fenced")
    assert row.status == "pending", "sent to a frozen Redis?"
    return frozen, frozen_mono, due


def test_redis_restart_stops_firing_then_catches_up_and_resends(
    throwaway_redis: ThrowawayRedis, pg_url: str, engine: Engine
) -> None:
    s = spec("tick", catchup="all")
    prefix = "cwfault"
    settings = make_settings(
        prefix,
        redis_url=throwaway_redis.url,
        instance_id="svc-redis",
        database_url=pg_url,
        lease_ttl=SHORT_TTL,
        resend_after=1.0,
    )
    observer = redis.Redis.from_url(throwaway_redis.url, socket_timeout=1)
    try:
        with running_service(settings, pg_url, by_name(s)) as (svc, _):
            wait_for(lambda: len(fire_rows(engine, "tick")) >= 3, timeout=15, what="3 fires")
            assert svc.leading

            # Redis stops answering (frozen), then dies (SIGKILL, its data gone with it).
            killed, killed_mono, frozen_fire = _freeze_just_before_a_fire(throwaway_redis, engine)
            throwaway_redis.kill()
            # The leader steps down (a failed renewal, or its clock saying the lease may
            # have expired); firing itself is gated on that clock, checked below.
            wait_for(lambda: not svc.leading, timeout=SHORT_TTL + 8, what="the step-down")
            stepped_down_after = time.monotonic() - killed_mono
            time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - killed_mono)))
            assert not svc.leading
            # Taken before start(): the service may take the lease before start() returns.
            restarted = datetime.now(UTC)
            throwaway_redis.start()

            def leads_again() -> bool:
                try:
                    holder = svc.lease.holder()
                except redis.RedisError:
                    return False
                return svc.leading and holder is not None and holder["instance_id"] == "svc-redis"

            wait_for(leads_again, timeout=15, what="the lease to be taken again")
            assert svc.lease_changes >= 2

            def recovered() -> bool:
                rows = fire_rows(engine, "tick")
                return (
                    bool(rows)
                    and rows[-1].scheduled_for >= restarted + 2 * ONE_SECOND
                    and all(r.status == "enqueued" for r in rows)
                )

            wait_for(recovered, timeout=20, what="fires after the restart, all enqueued")
            ok, why = svc.health(max_silence=2.5)
            assert ok and firing_thread_alive(svc), why
        rows = fire_rows(engine, "tick")
        queued = set(queued_message_ids(observer, prefix))
    finally:
        observer.close()

    # Firing stopped within the lease TTL of Redis going away: no row was written between
    # then (plus a tick's slack) and the restart.
    quiet_from = killed + timedelta(seconds=SHORT_TTL + 0.5)
    during = [
        (r.scheduled_for, r.created_at) for r in rows if quiet_from < r.created_at < restarted
    ]
    assert not during, f"fired without a lease (Redis went away at {killed}): {during}"
    # What was fenced after Redis went away (at least the fire at frozen_fire) could not be
    # sent; it was re-sent once Redis was back, and its message is in the new queue.
    stuck = [r for r in rows if killed < r.created_at < restarted]
    assert frozen_fire in [r.scheduled_for for r in stuck], (
        f"stepped down after {stepped_down_after:.2f}s"
    )
    for r in stuck:
        assert r.status == "enqueued" and r.enqueued_at >= restarted, r
        assert r.message_id in queued
    times = [r.scheduled_for for r in rows]
    # Every second through the outage is there once: the seconds missed were caught up.
    assert_consecutive(times)
    assert times[0] < killed - timedelta(seconds=2)
    assert {r.status for r in rows} == {"enqueued"}
    # Everything enqueued after the restart is in the (restarted, empty) broker's queue.
    assert {r.message_id for r in rows if r.enqueued_at >= restarted} <= queued


# -- 3. a scheduler killed between fence and send --------------------------------------------


def test_a_fire_left_pending_by_a_killed_scheduler_is_resent_once(
    throwaway_redis: ThrowawayRedis, pg_url: str, engine: Engine
) -> None:
    s = spec("hourly", every=timedelta(hours=1))
    # What a scheduler SIGKILLed right after the fence INSERT leaves: a pending row, no message.
    scheduled_for = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    [left] = Fence(engine, "killed-scheduler").claim([request(s, scheduled_for, "scheduled")])
    prefix = "cwfault"
    settings = make_settings(
        prefix,
        redis_url=throwaway_redis.url,
        instance_id="svc-new",
        database_url=pg_url,
        resend_after=0.5,
    )
    observer = redis.Redis.from_url(throwaway_redis.url, socket_timeout=1)
    try:
        assert queued_message_ids(observer, prefix) == []
        with running_service(settings, pg_url, by_name(s)) as (svc, _):
            wait_for(lambda: svc.leading, timeout=5, what="the new leader")
            wait_for(
                lambda: fire_rows(engine, "hourly")[0].status == "enqueued",
                timeout=10,
                what="the pending fire to be re-sent",
            )
            # The leader re-sends every second: an enqueued row must not be sent again.
            time.sleep(1.5)
            raw = observer.hvals(f"{prefix}-dramatiq:default.msgs")
    finally:
        observer.close()

    [row] = fire_rows(engine, "hourly")
    assert row.message_id == left.message_id
    assert row.fired_by == "killed-scheduler"
    assert len(raw) == 1, f"sent {len(raw)} times"
    message: dramatiq.Message[Any] = dramatiq.Message.decode(cast(bytes, raw[0]))
    assert message.message_id == left.message_id
    assert message.actor_name == s.actor
    assert message.options["cronwork"]["schedule"] == "hourly"
    assert (
        message.options["cronwork"]["scheduled_for"]
        == left.message["options"]["cronwork"]["scheduled_for"]
    )
