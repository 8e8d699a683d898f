"""Run the real ``cronwork`` CLI in subprocesses against real Postgres and Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from services.constants import LEASE_KEY
from tests.conftest import REDIS_SERVER

#: The actors the acceptance schedules use; written next to each test's schedules.yaml.
ACTORS = """
import os
import time

import dramatiq

from services.context import current_fire


@dramatiq.actor
def tick():
    fire = current_fire()
    return {"scheduled_for": fire.scheduled_for.isoformat() if fire else None}


@dramatiq.actor
def always_fails():
    raise RuntimeError("the payment gateway said no")


@dramatiq.actor
def slow(seconds=1.0):
    time.sleep(seconds)


@dramatiq.actor(max_retries=1, min_backoff=50, max_backoff=100)
def fails_fast(account, month="?"):
    raise RuntimeError(f"no invoice for {account} {month}")
"""


#: One schedule firing every second, for tests that only need something to fire.
TICKER = """
    imports: [acceptance_actors]
    schedules:
      ticker:
        actor: tick
        every: 1s
        max_retries: 0
"""


@dataclass
class Cronwork:
    """One test's cronwork deployment: a folder with schedules.yaml, env, processes."""

    root: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def write_schedules(self, yaml_text: str) -> Path:
        path = self.root / "schedules.yaml"
        path.write_text(textwrap.dedent(yaml_text))
        return path

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services", *args],
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, name: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [sys.executable, "-m", "services", *args],
            cwd=self.root,
            env={**self.env, "CRONWORK_INSTANCE_ID": name, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a kill reaches Dramatiq's worker children too
        )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(
        self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30
    ) -> None:
        """Signal the main process only, as Kubernetes does: Dramatiq forwards SIGTERM to
        its worker processes itself, and a second one would kill them mid-job."""
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc)


def leader_of(client: redis.Redis, prefix: str) -> str | None:
    """The instance id in the scheduler lease under ``prefix``, or None when nobody leads."""
    raw = client.get(f"{prefix}:{LEASE_KEY}")
    return json.loads(raw)["instance_id"] if raw else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    """GET an endpoint of a process on this host: (status, body), (0, "") while not listening."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""  # not listening (yet)


@pytest.fixture
def cronwork(tmp_path: Path, pg_url: str, redis_prefix: str) -> Iterator[Cronwork]:
    (tmp_path / "acceptance_actors.py").write_text(ACTORS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWORK_")} | {
        "CRONWORK_DATABASE_URL": pg_url,
        "CRONWORK_REDIS_URL": REDIS_SERVER,
        "CRONWORK_REDIS_PREFIX": redis_prefix,
        "CRONWORK_LEASE_TTL": "2",
        "CRONWORK_RESEND_AFTER": "2",
        "CRONWORK_HEARTBEAT_INTERVAL": "1",
        "CRONWORK_HTTP_PORT": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    cw = Cronwork(tmp_path, env)
    yield cw
    cw.stop_all()
