"""Locks between real processes on a real Redis: a race for one key, a SIGKILLed holder.

The holders run tests/integration/lock_holder.py and line up on Redis lists, so the
test decides when they try and learns what each did, with deadlines instead of sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from services.errors import LockBusy
from services.locks import Lock
from services.locks.config import _reset, configure
from tests.conftest import REDIS_SERVER
from tests.waiting import wait_for

HOLDER = Path(__file__).with_name("lock_holder.py")
#: Each process starting Python and importing cronwork may take seconds on a busy machine.
START_TIMEOUT = 60.0


@pytest.fixture
def spawn(tmp_path: Path, redis_prefix: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(key: str, ttl: float, mode: str, rounds: int = 1) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"holder-{len(procs)}.log").open("wb")
        args = [REDIS_SERVER, redis_prefix, key, str(ttl), mode, str(rounds)]
        proc = subprocess.Popen([sys.executable, str(HOLDER), *args], stdout=log, stderr=log)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.fixture
def locks(redis_prefix: str) -> Iterator[None]:
    _reset()
    configure(redis_url=REDIS_SERVER, prefix=redis_prefix, instance_id="the-test")
    yield
    _reset()


class Reports:
    """The holders' reports (``[what, round, pid]``), taken by kind as they arrive."""

    def __init__(self, client: redis.Redis, prefix: str, logs: Path) -> None:
        self.client, self.key, self.logs = client, f"{prefix}:test:reports", logs
        self.early: list[list[str]] = []  # arrived before the test asked for their kind

    def take(self, count: int, *kinds: str, timeout: float = START_TIMEOUT) -> list[list[str]]:
        """The next ``count`` reports of these kinds, in order of arrival."""
        got = [r for r in self.early if r[0] in kinds][:count]
        self.early = [r for r in self.early if r not in got]
        deadline = time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            item = self.client.blpop([self.key], timeout=max(1, int(left)))
            if item is not None:
                raw = item[1]
                report = (raw.decode() if isinstance(raw, bytes) else raw).split()
                (got if report[0] in kinds else self.early).append(report)
            elif time.monotonic() >= deadline:
                logs = "\n".join(p.read_text() for p in sorted(self.logs.glob("holder-*.log")))
                pytest.fail(f"holders reported {got}, expected {count} {kinds}; logs:\n{logs}")
        return got


def test_processes_racing_for_one_key_run_the_body_exactly_once_per_race(
    spawn: Callable[..., subprocess.Popen[bytes]],
    redis_client: redis.Redis,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    racers, rounds = 3, 6
    procs = [spawn("rebuild-cache", 30, "race", rounds) for _ in range(racers)]
    heard = Reports(redis_client, redis_prefix, tmp_path)
    for round_ in range(rounds):
        ready = heard.take(racers, "ready")
        # Everyone is lined up, and last round's winner has released (it reports ready after).
        assert [int(r[1]) for r in ready] == [round_] * racers
        # One list per round: a quick loser must not take a slow racer's go for the next.
        redis_client.rpush(f"{redis_prefix}:test:go:{round_}", *["go"] * racers)
        outcomes = heard.take(racers, "ran", "skipped")
        assert {int(r[1]) for r in outcomes} == {round_}
        ran = [r for r in outcomes if r[0] == "ran"]
        assert len(ran) == 1, f"round {round_}: {outcomes}"
        assert sorted(r[0] for r in outcomes) == ["ran"] + ["skipped"] * (racers - 1)
        assert int(ran[0][2]) in {p.pid for p in procs}
        redis_client.rpush(f"{redis_prefix}:test:go:done", "done")
    for proc in procs:
        assert proc.wait(START_TIMEOUT) == 0
    assert redis_client.exists(f"{redis_prefix}:lock:rebuild-cache") == 0


def test_a_sigkilled_holder_s_lock_frees_at_its_ttl_and_not_before(
    spawn: Callable[..., subprocess.Popen[bytes]],
    redis_client: redis.Redis,
    redis_prefix: str,
    tmp_path: Path,
    locks: None,
) -> None:
    ttl = 3.0
    key = f"{redis_prefix}:lock:nightly"
    proc = spawn("nightly", ttl, "hold")
    [held] = Reports(redis_client, redis_prefix, tmp_path).take(1, "held")
    assert int(held[2]) == proc.pid
    # Let its extender run at least once: only an extension makes the PTTL go up.
    lowest = redis_client.pttl(key)

    def extended() -> bool:
        nonlocal lowest
        now = redis_client.pttl(key)
        lowest = min(lowest, now)
        return now > lowest + 100

    wait_for(extended, timeout=ttl * 3, what="an extension")

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    killed_at = time.monotonic()
    left = redis_client.pttl(key) / 1000
    assert 0 < left <= ttl

    with pytest.raises(LockBusy, match=f"held by holder-{proc.pid}"):
        Lock("nightly", ttl=5).acquire()  # the dead holder's lock is still there ...
    with Lock("nightly", ttl=5, on_busy="wait", timeout=ttl * 5) as taken:
        freed_after = time.monotonic() - killed_at
        assert taken
    # ... until its TTL runs out: not long before (Redis never expires a key early; the
    # margin covers our own measuring) and not long after (a waiter wakes at the PTTL).
    assert left - 0.25 <= freed_after <= left + 2.0, (left, freed_after)
