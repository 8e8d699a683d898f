"""Chaos: three schedulers and two workers while processes die and servers restart empty.

The real CLI in subprocesses, on a throwaway Postgres and Redis of the test's own. For a
while, at random (seeded): schedulers and workers get SIGKILL (the whole process group,
as a pod dies) or SIGTERM (a rolling deploy), and come back a moment later, as a
supervisor brings them back; Redis is killed and restarted empty; Postgres is stopped and
started again. Then everything settles and the record is checked:

- every scheduled time of every schedule has its fire;
- every fire has its outcome, or an open incident says it has not;
- no fire succeeded twice;
- no job body ran without its attempt row (bodies append what they ran to a file);
- nothing was abandoned on a worker that was alive;
- every process not killed on purpose is still running, and firing resumed.

A short run is part of the suite. ``CRONWORK_CHAOS_SECONDS`` (e.g. 360) and
``CRONWORK_CHAOS_SEED`` choose a longer one; ``CRONWORK_CHAOS_REPORT`` names a JSON file
for its figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from services.schedules.loader import parse_schedules
from services.schedules.triggers import build_trigger
from tests.servers import (  # noqa: F401 (fixtures)
    ThrowawayPostgres,
    ThrowawayRedis,
    throwaway_pg_fixture,
    throwaway_redis_fixture,
)
from tests.waiting import wait_for

CHAOS_SECONDS = float(os.environ.get("CRONWORK_CHAOS_SECONDS", "70"))
SEED = int(os.environ.get("CRONWORK_CHAOS_SEED", "20261129"))
LONG = CHAOS_SECONDS > 120
#: After the chaos, how long everything may take to settle: lost messages are looked for
#: every 10 s after 15 s of quiet, unfinished fires become incidents after their grace.
SETTLE_SECONDS = 120 if LONG else 75

ACTORS = """
import os
import random
import time

import dramatiq

from services.context import current_fire

EFFECTS = os.environ["CHAOS_EFFECTS"]


def _ran(kind):
    fire = current_fire()
    line = f"{fire.message_id} {fire.attempt} {fire.fire_id} {os.getpid()} {kind}\\n"
    with open(EFFECTS, "a") as out:
        out.write(line)
        out.flush()


@dramatiq.actor
def chaos_ok(low=0.0, high=0.3):
    _ran("ok")
    time.sleep(random.uniform(low, high))


@dramatiq.actor
def chaos_flaky():
    _ran("flaky")
    time.sleep(random.uniform(0.0, 0.2))
    if random.random() < 0.3:
        raise RuntimeError("flaky job failed, as it does")
"""

SCHEDULES = """
imports: [chaos_actors]
defaults:
  catchup: all
  catchup_window: 1h
  grace: 30s
schedules:
  every-second:
    actor: chaos_ok
    every: 1s
  every-two:
    actor: chaos_ok
    every: 2s
    kwargs: {low: 0.5, high: 1.5}
  flaky:
    actor: chaos_flaky
    every: 2s
    max_retries: 5
    min_backoff: 200ms
    max_backoff: 1s
"""


@dataclass
class Proc:
    name: str
    args: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    #: Killed or stopped on purpose (its exit is expected).
    stopped: bool = False


@dataclass
class Chaos:
    root: Path
    env: dict[str, str]
    rng: random.Random
    procs: dict[str, Proc] = field(default_factory=dict)
    generation: Counter[str] = field(default_factory=Counter)
    #: instance id -> when it was killed or stopped.
    gone: dict[str, float] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)

    def start(self, role: str, *args: str) -> None:
        self.generation[role] += 1
        name = f"{role}-g{self.generation[role]}"
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        popen = subprocess.Popen(
            [sys.executable, "-m", "services", *args],
            cwd=self.root,
            env={**self.env, "CRONWORK_INSTANCE_ID": name},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = Proc(name, args, popen)

    def kill(self, name: str, sig: int) -> None:
        proc = self.procs.pop(name)
        proc.stopped = True
        self.gone[name] = time.time()
        self.events.append((time.time(), f"{signal.Signals(sig).name} {name}"))
        if sig == signal.SIGKILL:
            os.killpg(proc.popen.pid, signal.SIGKILL)  # a pod dies with all its processes
        else:
            proc.popen.send_signal(sig)  # Kubernetes signals the main process only
        try:
            proc.popen.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(10)

    def role_of(self, name: str) -> str:
        return name.rsplit("-g", 1)[0]

    def exited_by_themselves(self) -> list[str]:
        return [p.name for p in self.procs.values() if p.popen.poll() is not None]

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.popen.poll() is None:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(10)


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)))


# The suite's 300 s timeout would cut a long run short: chaos, settling, and room to start.
@pytest.mark.timeout(CHAOS_SECONDS + SETTLE_SECONDS + 240)
def test_chaos(
    tmp_path: Path, throwaway_pg: ThrowawayPostgres, throwaway_redis: ThrowawayRedis
) -> None:
    rng = random.Random(SEED)
    (tmp_path / "chaos_actors.py").write_text(textwrap.dedent(ACTORS))
    (tmp_path / "schedules.yaml").write_text(SCHEDULES)
    effects = tmp_path / "effects.txt"
    effects.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWORK_")} | {
        "CRONWORK_DATABASE_URL": throwaway_pg.url,
        "CRONWORK_REDIS_URL": throwaway_redis.url,
        "CRONWORK_REDIS_PREFIX": "chaos",
        "CRONWORK_LEASE_TTL": "2",
        "CRONWORK_RESEND_AFTER": "2",
        "CRONWORK_HEARTBEAT_INTERVAL": "0.5",
        "CRONWORK_LOST_AFTER": "3",
        "CRONWORK_WATCHDOG_INTERVAL": "2",
        "CRONWORK_HTTP_PORT": "0",
        "CHAOS_EFFECTS": str(effects),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "services", "migrate"], cwd=tmp_path, env=env, timeout=120
    )
    assert migrate.returncode == 0
    chaos = Chaos(tmp_path, env, rng)
    worker_args = ("worker", "--processes", "1", "--threads", "4")
    for _ in range(3):
        chaos.start("scheduler", "scheduler")
    for role in ("worker-a", "worker-b"):
        chaos.generation[role] += 0
        chaos.start(role, *worker_args)
    engine = create_engine(throwaway_pg.url, pool_pre_ping=True)
    try:
        started = datetime.now(UTC)
        wait_for(
            lambda: scalar(engine, _SUCCEEDED) >= 5,
            timeout=60,
            interval=0.5,
            what="the first fires to succeed",
            tolerate=(Exception,),  # the database may be restarting: ask again
        )
        chaos_start = datetime.now(UTC)
        _run_chaos(chaos, throwaway_pg, throwaway_redis, worker_args)
        chaos_end = datetime.now(UTC)
        _settle(chaos, engine, chaos_end)
        report = _check(chaos, engine, effects, chaos_start, chaos_end, started)
    finally:
        chaos.stop_all()
        engine.dispose()
    path = os.environ.get("CRONWORK_CHAOS_REPORT")
    if path:
        Path(path).write_text(json.dumps(report, indent=2))
    print(f"\nchaos seed {SEED}, {CHAOS_SECONDS:.0f}s: {json.dumps(report)}")


_SUCCEEDED = "SELECT count(*) FROM cronwork_fires WHERE status = 'succeeded'"


def _run_chaos(
    chaos: Chaos, pg: ThrowawayPostgres, redis_server: ThrowawayRedis, worker_args: tuple[str, ...]
) -> None:
    rng = chaos.rng
    down_range = (3.0, 8.0) if LONG else (1.5, 4.0)
    end = time.monotonic() + CHAOS_SECONDS
    restarts: list[tuple[float, str]] = []  # (when, role)
    while time.monotonic() < end:
        time.sleep(rng.uniform(1.5, 4.0))
        now = time.monotonic()
        for when, role in [r for r in restarts if r[0] <= now]:
            restarts.remove((when, role))
            chaos.start(role, *(worker_args if role.startswith("worker") else ("scheduler",)))
        event = rng.choices(["kill", "term", "redis", "postgres"], weights=[4, 3, 1, 1], k=1)[0]
        if event in ("kill", "term"):
            candidates = sorted(chaos.procs)
            if len(candidates) <= 2:
                continue  # keep some processes up: the supervisor is slow, not absent
            victim = rng.choice(candidates)
            chaos.kill(victim, signal.SIGKILL if event == "kill" else signal.SIGTERM)
            restarts.append((time.monotonic() + rng.uniform(1.0, 3.0), chaos.role_of(victim)))
        elif event == "redis":
            chaos.events.append((time.time(), "redis restarts empty"))
            redis_server.kill()
            time.sleep(rng.uniform(*down_range))
            redis_server.start()
        else:
            chaos.events.append((time.time(), "postgres restarts"))
            pg.stop(rng.choice(["fast", "immediate"]))
            time.sleep(rng.uniform(*down_range))
            pg.start()
    for _, role in restarts:
        chaos.start(role, *(worker_args if role.startswith("worker") else ("scheduler",)))


def _settle(chaos: Chaos, engine: Engine, chaos_end: datetime) -> None:
    """Wait until every fire due before the end of the chaos has its outcome (or time's up)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    cutoff = chaos_end.isoformat()
    while time.monotonic() < deadline:
        try:
            open_fires = scalar(
                engine,
                "SELECT count(*) FROM cronwork_fires WHERE status IN "
                f"('pending', 'enqueued', 'running', 'retrying') AND scheduled_for < '{cutoff}'",
            )
            resumed = scalar(
                engine,
                "SELECT count(*) FROM cronwork_fires WHERE status = 'succeeded' "
                f"AND scheduled_for > '{(chaos_end + timedelta(seconds=5)).isoformat()}'",
            )
            if open_fires == 0 and resumed > 0:
                return
        except Exception:
            pass
        time.sleep(1.0)
    # Whatever is still open must be covered by an incident: _check says so.


def _story(fire: Any, attempts: list[Any], chaos: Chaos) -> str:
    """What happened to one fire: for a failure message that can be acted on."""
    tried = sorted(
        (a.attempt, a.status, a.instance_id, str(a.error_message)[:80])
        for a in attempts
        if a.fire_id == fire.id
    )
    mentions = []
    for path in sorted(chaos.root.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if fire.message_id in line or f"fire {fire.id}" in line:
                mentions.append(f"{path.stem}: {line[:200]}")
    return (
        f"{fire.schedule}#{fire.id} {fire.status} due {fire.scheduled_for.isoformat()} "
        f"updated {fire.updated_at.isoformat()} options {fire.message['options']} "
        f"error {fire.error!r} attempts {tried} log {mentions[-10:]}"
    )


def _check(
    chaos: Chaos,
    engine: Engine,
    effects: Path,
    chaos_start: datetime,
    chaos_end: datetime,
    started: datetime,
) -> dict[str, Any]:
    specs = parse_schedules(SCHEDULES).schedules
    fires = rows(engine, "SELECT * FROM cronwork_fires ORDER BY schedule, scheduled_for")
    attempts = rows(engine, "SELECT * FROM cronwork_attempts")
    incidents = rows(engine, "SELECT * FROM cronwork_incidents WHERE resolved_at IS NULL")

    # 1. Every scheduled time has its fire, from the first fire to the end of the chaos.
    missing: list[str] = []
    for name, spec in specs.items():
        times = {f.scheduled_for for f in fires if f.schedule == name}
        assert times, f"{name} never fired"
        trigger = build_trigger(spec)
        t = min(times)
        while t is not None and t < chaos_end - timedelta(seconds=2):
            if t not in times:
                missing.append(f"{name}@{t.isoformat()}")
            t = trigger.get_next_fire_time(t, t)
    # 2. Every fire has its outcome, or an open incident about its schedule says it has not.
    unfinished = [f for f in fires if f.status in ("pending", "enqueued", "running", "retrying")]
    covered = {i.schedule for i in incidents}
    uncovered = [
        _story(f, attempts, chaos)
        for f in unfinished
        if f.scheduled_for < chaos_end and f.schedule not in covered
    ]
    # 3. No fire succeeded twice.
    wins = Counter(a.fire_id for a in attempts if a.status == "succeeded")
    double = [fire_id for fire_id, n in wins.items() if n > 1]
    # 4. No body ran without its attempt row.
    ran = {(a.message_id, a.attempt) for a in attempts if a.status != "skipped"}
    bodies = []
    for line in effects.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5:  # a body killed mid-write may leave a torn line
            bodies.append((parts[0], int(parts[1])))
    untracked = [b for b in bodies if b not in ran]
    # 5. Nothing abandoned on a worker that was alive.
    abandoned = [a for a in attempts if a.abandoned_at is not None]
    given_up = {(a.message_id, a.attempt) for a in abandoned}
    on_live = [
        f"{a.instance_id} attempt {a.attempt} of fire {a.fire_id}"
        for a in abandoned
        if a.instance_id not in chaos.gone or chaos.gone[a.instance_id] > a.abandoned_at.timestamp()
    ]
    # 6. Every process recovered by itself, and firing resumed after the chaos.
    exited = chaos.exited_by_themselves()
    recent = scalar(
        engine,
        "SELECT count(*) FROM cronwork_fires WHERE status = 'succeeded' "
        f"AND scheduled_for > '{(chaos_end + timedelta(seconds=5)).isoformat()}'",
    )
    report = {
        "seed": SEED,
        "chaos_seconds": CHAOS_SECONDS,
        "events": Counter(e.split()[0] for _, e in chaos.events),
        "fires": len(fires),
        "missing": len(missing),
        # Fires due during the chaos still without an outcome (each must have an incident),
        # and those due while it settled, in flight when the figures were taken.
        "unfinished": sum(1 for f in unfinished if f.scheduled_for < chaos_end),
        "in_flight_at_end": sum(1 for f in unfinished if f.scheduled_for >= chaos_end),
        "unfinished_without_incident": len(uncovered),
        "double_successes": len(double),
        "bodies_run": len(bodies),
        "bodies_without_attempt_row": len(untracked),
        # Bodies of attempts given up (their worker died): that work was done again.
        "re_runs": sum(1 for b in bodies if b in given_up),
        "abandoned": len(abandoned),
        "abandoned_on_live_workers": len(on_live),
        "processes_exited_by_themselves": exited,
    }
    assert not missing, f"scheduled times without a fire: {missing[:20]}"
    assert not uncovered, f"fires without an outcome and without an incident: {uncovered[:20]}"
    assert not double, f"fires that succeeded twice: {double[:20]}"
    assert not untracked, f"bodies that ran without an attempt row: {untracked[:20]}"
    assert not on_live, f"attempts abandoned on live workers: {on_live[:20]}"
    assert not exited, f"processes that exited on their own: {exited}"
    assert recent > 0, "nothing succeeded after the chaos ended"
    assert len(fires) > CHAOS_SECONDS, report
    return report
