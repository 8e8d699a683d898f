"""A scheduler with 10,000 schedules declared: start-to-synced seconds and resident memory.

Runs the real ``cronwork scheduler`` in a subprocess, on a throwaway database and Redis
prefix, with a generated schedules.yaml (cron and every, in four time zones, about ten
fires a second between them). It reads the process's ``VmRSS`` and ``VmHWM`` from
/proc: when its log says ``schedules synced`` (it leads and is about to fire), then
every few seconds while it fires, for a shortened run by default or an hour (``--full``).

Baselines, in the same run, each a subprocess of its own:

* the import floor: a bare Python importing the modules the scheduler imports;
* stock APScheduler 3: a ``BackgroundScheduler`` with the same number of jobs (the same
  kinds of trigger, in the same zones) added to a ``SQLAlchemyJobStore`` on Postgres.

    python -m bench.scheduler_memory [--schedules 10000] [--minutes 1] [--full]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._support import ACTORS, REDIS_SERVER, cpu_seconds, database, redis_prefix, table

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
#: What the scheduler imports, for the import-floor baseline.
IMPORTS = (
    "import services.cli.processes, services.runtime, services.scheduler.service, "
    "services.web.health, services.watch.sentry, services.locks, bench_actors"
)
SYNCED = re.compile(r"schedules synced")


def _schedule(i: int) -> tuple[str, str]:
    """(trigger line, zone) of schedule ``i``: a mix a large deployment has, ~10 fires/s."""
    zone = ZONES[i % len(ZONES)]
    kind = i % 10
    if kind == 0:
        return f"every: {60 + i % 120}s", zone  # the busiest tenth: ~9 fires/s together
    if kind in (1, 2):
        return f"every: {1 + i % 60}m", zone
    if kind == 3:
        return "every: 1h30m", zone
    if kind in (4, 5):
        return f'cron: "{i % 60} {i % 24} * * *"', zone
    if kind == 6:
        return f'cron: "{i % 60} * * * *"', zone
    if kind == 7:
        return f'cron: "*/{5 + i % 25} * * * mon-fri"', zone
    if kind == 8:
        return f'cron: "{i % 60} 9 * * 1"', zone
    return f"every: {1 + i % 24}h", zone


def write_schedules(folder: Path, count: int) -> None:
    parts = ["imports: [bench_actors]\nschedules:\n"]
    for i in range(count):
        trigger, zone = _schedule(i)
        parts.append(f"  j{i}:\n    actor: tick\n    {trigger}\n    timezone: {zone}\n")
    (folder / "schedules.yaml").write_text("".join(parts))
    (folder / "bench_actors.py").write_text(ACTORS)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident) of a process, in kB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _env(folder: Path, **extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CRONWORK_")} | {
        "PYTHONPATH": f"{folder}{os.pathsep}{Path(__file__).resolve().parents[1]}",
        **extra,
    }


def _wait_for_line(proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float) -> None:
    """Read the process's output until a line matches; keep draining it afterwards."""
    found = threading.Event()
    ended = threading.Event()
    tail: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not found.is_set():
                tail[:] = [*tail[-20:], line]
                if pattern.search(line):
                    found.set()
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.05):
        if ended.is_set() or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"no line matching {pattern.pattern!r}:\n{''.join(tail)}")


def _watch(pid: int, seconds: float, every: float) -> list[tuple[float, int]]:
    """(seconds since the first sample, VmRSS kB) every ``every`` seconds for ``seconds``."""
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    while True:
        now = time.monotonic() - started
        samples.append((now, memory_kb(pid)["VmRSS"]))
        if now >= seconds:
            return samples
        time.sleep(min(every, max(seconds - now, 0.0)))


def measure(
    cmd: list[str], folder: Path, env: dict[str, str], ready: re.Pattern[str], seconds: float
) -> dict[str, float]:
    """Start ``cmd``; seconds until a line matches ``ready``, then its memory over time."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for_line(proc, ready, timeout=600)
        ready_s = time.perf_counter() - started
        at_ready = memory_kb(proc.pid)
        cpu_at_ready = cpu_seconds(proc.pid)
        samples = _watch(proc.pid, seconds, every=max(1.0, seconds / 60))
        peak = memory_kb(proc.pid)["VmHWM"]
        cpu = cpu_seconds(proc.pid) - cpu_at_ready
    finally:
        proc.terminate()
        proc.wait(30)
    # Growth: the last quarter's mean against the second quarter's, which leaves out the
    # first fires' one-time allocations (metrics children, caches filling).
    quarter = max(len(samples) // 4, 1)
    early = sum(kb for _, kb in samples[quarter : 2 * quarter]) / quarter
    late = sum(kb for _, kb in samples[-quarter:]) / quarter
    return {
        "synced_s": ready_s,
        "rss_synced_mb": at_ready["VmRSS"] / 1024,
        "rss_end_mb": samples[-1][1] / 1024,
        "peak_mb": peak / 1024,
        "growth_mb": (late - early) / 1024,
        # Share of one core it used while measured (after ready).
        "cpu_pct": 100 * cpu / max(samples[-1][0], 1e-9),
        "fires": float("nan"),
    }


def run_cronwork(folder: Path, seconds: float) -> dict[str, float]:
    with database() as url, redis_prefix() as prefix:
        env = _env(
            folder,
            CRONWORK_DATABASE_URL=url,
            CRONWORK_REDIS_URL=REDIS_SERVER,
            CRONWORK_REDIS_PREFIX=prefix,
            CRONWORK_HTTP_PORT="0",
            CRONWORK_INSTANCE_ID="bench-scheduler",
        )
        cmd = [sys.executable, "-m", "services", "scheduler"]
        result = measure(cmd, folder, env, SYNCED, seconds)
        result["fires"] = _count_fires(url)
    return result


def _count_fires(url: str) -> float:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text("select count(*) from cronwork_fires")).scalar_one()
    engine.dispose()
    return float(count)


#: Stock APScheduler 3 with the same schedules; prints READY when every job is added.
_APSCHEDULER = """
import sys, time
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from bench.scheduler_memory import ZONES, _schedule

def tick():
    return None

url, count = sys.argv[1], int(sys.argv[2])
scheduler = BackgroundScheduler(timezone="UTC")
scheduler.add_jobstore(SQLAlchemyJobStore(url=url), "default")
scheduler.start(paused=True)
for i in range(count):
    trigger, zone = _schedule(i)
    kind, _, value = trigger.partition(": ")
    value = value.strip('"')
    if kind == "cron":
        trig = CronTrigger.from_crontab(value, timezone=zone)
    else:
        units = {"s": "seconds", "m": "minutes", "h": "hours"}
        if value == "1h30m":
            trig = IntervalTrigger(minutes=90, timezone=zone)
        else:
            trig = IntervalTrigger(timezone=zone, **{units[value[-1]]: int(value[:-1])})
    scheduler.add_job(tick, trig, id=f"j{i}")
scheduler.resume()
print("READY", flush=True)
time.sleep(3600 * 24)
"""


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=1.0, help="firing time measured")
    parser.add_argument("--full", action="store_true", help="an hour of firing")
    args = parser.parse_args(argv)
    seconds = 3600.0 if args.full else args.minutes * 60
    n = args.schedules
    with tempfile.TemporaryDirectory(prefix="cw-bench-mem-") as tmp:
        folder = Path(tmp)
        write_schedules(folder, n)
        ready = re.compile("READY")
        floor_code = f"{IMPORTS}\nprint('READY', flush=True)\nimport time; time.sleep(86400)"
        floor = measure([sys.executable, "-c", floor_code], folder, _env(folder), ready, 1.0)
        with database() as url:
            stock_cmd = [sys.executable, "-c", _APSCHEDULER, url, str(n)]
            stock = measure(stock_cmd, folder, _env(folder), ready, min(seconds, 60.0))
        cw = run_cronwork(folder, seconds)

    def row(name: str, r: dict[str, float], what: str) -> tuple[str, ...]:
        fires = "" if r["fires"] != r["fires"] else f"{r['fires']:.0f}"
        return (
            name,
            f"{r['synced_s']:.2f}",
            f"{r['rss_synced_mb']:.0f}",
            f"{r['rss_end_mb']:.0f}",
            f"{r['peak_mb']:.0f}",
            f"{r['growth_mb']:+.1f}",
            f"{r['cpu_pct']:.1f}",
            what,
            fires,
        )

    minutes = f"{seconds:.0f} s"
    return table(
        [
            ("scheduler memory", "start->ready s", "RSS MB", "RSS end MB", "peak MB",
             "growth MB", "CPU %", "measured", "fires"),
            row("import floor (bare Python, same imports)", floor, "1 s"),
            row(f"stock APScheduler 3, {n} jobs in SQLAlchemyJobStore", stock,
                f"{min(seconds, 60.0):.0f} s"),
            row(f"cronwork scheduler, {n} schedules", cw, minutes),
        ]
    )  # fmt: skip


if __name__ == "__main__":
    print(main())
