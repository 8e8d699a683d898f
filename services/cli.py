"""The ``cronwork`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from services import __version__
from services.errors import ConfigError, CronworkError, UnknownSchedule
from services.logs import configure_logging, secrets_of
from services.redact import redact
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.timeutil import iso

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from services.scheduler.service import SchedulerService

logger = logging.getLogger("cronwork")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"cronwork: invalid settings: {redact(str(exc))}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        return int(args.func(settings, args) or 0)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"cronwork: {settings.schedules_file} refused; nothing applied", file=sys.stderr)
        return 1
    except CronworkError as exc:
        print(f"cronwork: {redact(str(exc), secrets_of(settings))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clean line, never a traceback with a URL in it
        logger.debug("unexpected error", exc_info=True)
        print(
            f"cronwork: {type(exc).__name__}: {redact(str(exc), secrets_of(settings))}",
            file=sys.stderr,
        )
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cronwork", description="Recurring work, on time, once.")
    p.add_argument("--version", action="version", version=f"cronwork {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(
        name: str, func: Callable[[Settings, argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    cmd("check", cmd_check, "validate schedules.yaml and that every actor exists")
    cmd("migrate", cmd_migrate, "create or upgrade the database schema (Alembic upgrade head)")
    cmd("scheduler", cmd_scheduler, "run a scheduler replica (only the lease holder fires)")
    w = cmd("worker", cmd_worker, "run Dramatiq workers that execute and track the actors")
    w.add_argument("--processes", "-p", type=int, default=os.cpu_count() or 1)
    w.add_argument("--threads", "-t", type=int, default=8)
    w.add_argument("--queues", "-Q", nargs="+", help="queues to consume (default: all)")
    w.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if this container's worker heartbeat is fresh, 1 otherwise (liveness)",
    )
    up = cmd("up", cmd_up, "scheduler and worker in one process (embedded when no URLs are set)")
    up.add_argument("--threads", "-t", type=int, default=4)
    n = cmd("next", cmd_next, "print a schedule's next fire times")
    n.add_argument("name")
    n.add_argument("-n", type=int, default=5, help="how many (default 5)")
    n.add_argument("--after", help="ISO time to start from (default now)")
    n.add_argument("--json", action="store_true")
    s = cmd("status", cmd_status, "the lease holder and every schedule's state")
    s.add_argument("--json", action="store_true")
    h = cmd("history", cmd_history, "newest fires first, with their attempts")
    h.add_argument("--schedule")
    h.add_argument("--limit", type=int, default=20)
    h.add_argument("--json", action="store_true")
    i = cmd("incidents", cmd_incidents, "open incidents (watchdog findings, final failures)")
    i.add_argument("--all", action="store_true", help="resolved ones too (newest first)")
    i.add_argument("--limit", type=int, default=50)
    i.add_argument("--json", action="store_true")
    for name, func, text in (
        ("trigger", cmd_trigger, "fire a schedule now (kind manual)"),
        ("pause", cmd_pause, "stop a schedule from firing, until resumed"),
        ("resume", cmd_resume, "let a paused schedule fire again"),
    ):
        cmd(name, func, text).add_argument("name")
    return p


# -- helpers -----------------------------------------------------------------------


def _schedules(settings: Settings) -> dict[str, ScheduleSpec]:
    from services.runtime import load_schedule_file

    return load_schedule_file(settings).schedules


def _spec(settings: Settings, name: str) -> ScheduleSpec:
    specs = _schedules(settings)
    if name not in specs:
        known = ", ".join(specs) or "none"
        raise UnknownSchedule(
            f"no schedule named '{name}' in {settings.schedules_file} (known: {known})"
        )
    return specs[name]


def _engine(settings: Settings) -> Engine:
    from services.runtime import engine_for, ensure_schema

    engine = engine_for(settings)
    ensure_schema(settings, engine, migrate=False)
    return engine


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _on_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, _frame: Any) -> None:
        logger.info("received %s; shutting down", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- commands ----------------------------------------------------------------------


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from services.runtime import load_schedule_file, prepare_broker

    schedule_file = load_schedule_file(settings)
    prepare_broker(settings, schedule_file)
    print(f"{schedule_file.path}: {len(schedule_file.schedules)} schedule(s) OK")
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.migrate import upgrade

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url_value())
    print("database schema is up to date")
    return 0


def _scheduler_service(
    settings: Settings, broker: Any, specs: dict[str, ScheduleSpec], engine: Engine
) -> SchedulerService:
    from services.scheduler.lease import LocalLease, RedisLease
    from services.scheduler.service import SchedulerService

    lease: Any
    if settings.embedded:
        lease = LocalLease(settings.instance_id, settings.lease_ttl)
    else:
        import redis

        from services.constants import LEASE_KEY

        client = redis.Redis.from_url(
            settings.redis_url_value() or "", socket_timeout=max(settings.lease_ttl / 3, 0.5)
        )
        lease = RedisLease(
            client, f"{settings.redis_prefix}:{LEASE_KEY}", settings.lease_ttl, settings.instance_id
        )
    return SchedulerService(settings, engine, broker, specs, lease)


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from services.runtime import load_schedule_file, prepare_broker
    from services.web.health import serve as serve_health

    if settings.embedded:
        raise CronworkError(
            "`cronwork scheduler` needs CRONWORK_REDIS_URL (the lease and the queue); "
            "for one process without Redis run `cronwork up`"
        )
    from services.watch.sentry import init_sentry

    init_sentry(settings, dramatiq=False)  # plain error capture and watchdog check-ins
    schedule_file = load_schedule_file(settings)
    broker = prepare_broker(settings, schedule_file)
    engine = _engine(settings)
    service = _scheduler_service(settings, broker, schedule_file.schedules, engine)
    _on_signals(service.stop)
    serve_health(settings, live=service.health)
    logger.info("scheduler %s starting", settings.instance_id)
    service.run()
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from services.runtime import load_schedule_file, prepare_broker
    from services.web.health import worker_check, worker_parent

    if args.check:
        return worker_check(settings)
    if settings.embedded:
        raise CronworkError(
            "`cronwork worker` needs CRONWORK_REDIS_URL; "
            "for one process without Redis run `cronwork up`"
        )
    # Refuse a bad schedules.yaml (or a bare database) here, with a clean message,
    # before Dramatiq starts processes that would each fail on it.
    prepare_broker(settings, load_schedule_file(settings))
    _engine(settings).dispose()
    os.environ["CRONWORK_WORKER_PROCESSES"] = str(args.processes)
    # Spawn, not fork: the children import the actors onto their own tracking broker,
    # instead of inheriting modules already bound to the broker checked above.
    argv = ["services.worker.boot:setup", "--use-spawn", "--processes", str(args.processes)]
    argv += ["--threads", str(args.threads)]
    if args.queues:
        argv += ["--queues", *args.queues]
    with worker_parent(settings):  # /healthz etc., metrics dir and heartbeat file for children
        return int(dramatiq_main(make_argument_parser().parse_args(argv)) or 0)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    import dramatiq

    from services.broker import make_broker
    from services.runtime import engine_for, ensure_schema, load_schedule_file, prepare_broker
    from services.watch.sentry import init_sentry
    from services.web.health import serve as serve_health
    from services.worker.alert_hook import install as install_alerts

    schedule_file = load_schedule_file(settings)
    engine = engine_for(settings)
    ensure_schema(settings, engine, migrate=True)
    init_sentry(settings, dramatiq=True)  # before the broker: it patches Broker.__init__
    broker = make_broker(settings, engine_factory=lambda: engine)
    prepare_broker(settings, schedule_file, broker)
    install_alerts(broker, settings, schedule_file.schedules, lambda: engine)
    if settings.embedded:
        logger.warning(
            "embedded mode: SQLite at %s, in-memory queue, local lease — single instance only; "
            "set CRONWORK_DATABASE_URL and CRONWORK_REDIS_URL to run replicas",
            settings.data_dir / "cronwork.sqlite3",
        )
    service = _scheduler_service(settings, broker, schedule_file.schedules, engine)
    worker = dramatiq.Worker(broker, worker_threads=args.threads)
    _on_signals(service.stop)
    try:
        serve_health(settings, live=service.health)
    except CronworkError as exc:
        # On a laptop a busy port (8080 is popular) must not stop `make run`.
        logger.warning("%s; running without health endpoints", exc)
    # Dramatiq's own CLI sends this; it starts the TimeLimit thread among others.
    broker.emit_after("process_boot")
    worker.start()
    thread = threading.Thread(target=service.run, name="cronwork-scheduler")
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    finally:
        service.stop()
        thread.join()
        worker.stop(timeout=30_000)
    return 0


def cmd_next(settings: Settings, args: argparse.Namespace) -> int:
    from services.schedules.triggers import build_trigger

    spec = _spec(settings, args.name)
    after = datetime.now(UTC)
    if args.after:
        after = datetime.fromisoformat(args.after.replace("Z", "+00:00"))
        if after.tzinfo is None:
            after = after.replace(tzinfo=ZoneInfo(spec.timezone))
    trigger = build_trigger(spec)
    times: list[datetime] = []
    t = trigger.get_next_fire_time(None, after)
    while t is not None and len(times) < args.n:
        times.append(t)
        t = trigger.get_next_fire_time(t, t)
    if args.json:
        _print_json([iso(t) for t in times])
        return 0
    zone = ZoneInfo(spec.timezone)
    for t in times:
        local = t.astimezone(zone)
        print(f"{iso(t)}  {local:%Y-%m-%d %H:%M:%S %Z} ({spec.timezone})")
    if not times:
        print(f"{spec.name} has no fire times after {iso(after)}")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.views import status

    data = status(_engine(settings), _schedules(settings), settings.lease_ttl)
    if args.json:
        _print_json(data)
        return 0
    lead = data["leader"]
    print(f"leader: {lead['instance_id']} since {lead['since']}" if lead else "leader: none")
    rows = [("SCHEDULE", "TRIGGER", "ZONE", "NEXT RUN", "LAST", "DURATION")]
    for s in data["schedules"]:
        state = (
            "paused" if s["paused"] else ("disabled" if not s["enabled"] else s["next_run"] or "-")
        )
        last = s["last_fire"] or {}
        dur = last.get("duration_ms")
        rows.append(
            (
                s["name"],
                s["trigger"],
                s["timezone"],
                state,
                last.get("status", "-"),
                "-" if dur is None else f"{dur}ms",
            )
        )
    _table(rows)
    return 0


def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.views import history

    data = history(_engine(settings), args.schedule, args.limit)
    if args.json:
        _print_json(data)
        return 0
    rows = [("SCHEDULED FOR", "SCHEDULE", "KIND", "STATUS", "ATTEMPTS", "ERROR")]
    for f in data:
        err = (f["error"] or "").splitlines()[0][:60] if f["error"] else ""
        rows.append(
            (
                f["scheduled_for"],
                f["schedule"],
                f["kind"],
                f["status"],
                str(len(f["attempts"])),
                err,
            )
        )
    _table(rows)
    return 0


def cmd_trigger(settings: Settings, args: argparse.Namespace) -> int:
    from services.runtime import load_schedule_file, prepare_broker
    from services.scheduler.dispatch import Dispatcher
    from services.store.fence import Fence, request
    from services.timeutil import utcnow
    from services.vocabulary import FireKind

    schedule_file = load_schedule_file(settings)
    spec = _spec(settings, args.name)
    engine = _engine(settings)
    fence = Fence(engine, f"cli:{settings.instance_id}")
    won = fence.claim([request(spec, utcnow(), FireKind.MANUAL)])
    if not won:
        raise CronworkError(f"could not record a manual fire of '{spec.name}'")
    fire = won[0]
    if settings.embedded:
        print(
            f"fired {spec.name} (fire {fire.id}); the running `cronwork up` sends it within seconds"
        )
        return 0
    broker = prepare_broker(settings, schedule_file)
    sent = Dispatcher(broker, fence).send(won)
    where = "enqueued" if sent else "pending (broker unreachable; the leader re-sends it)"
    print(f"fired {spec.name} (fire {fire.id}): {where}")
    return 0


def _set_paused(settings: Settings, name: str, paused: bool) -> None:
    from services.store.schedule_rows import set_paused

    set_paused(_engine(settings), _spec(settings, name), paused)


def cmd_pause(settings: Settings, args: argparse.Namespace) -> int:
    _set_paused(settings, args.name, True)
    print(f"paused {args.name}: it will not fire until `cronwork resume {args.name}`")
    return 0


def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    _set_paused(settings, args.name, False)
    print(f"resumed {args.name}")
    return 0


def cmd_incidents(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.incidents import IncidentStore

    found = IncidentStore(_engine(settings)).list(include_resolved=args.all, limit=args.limit)
    if args.json:
        _print_json([inc.to_json() for inc in found])
        return 0
    if not found:
        print("no open incidents" if not args.all else "no incidents")
        return 0
    rows = [("ID", "KIND", "SCHEDULE", "OPENED", "RESOLVED", "COUNT", "SUBJECT")]
    for inc in found:
        rows.append(
            (
                str(inc.id),
                inc.kind,
                inc.schedule,
                iso(inc.opened_at) or "-",
                iso(inc.resolved_at) or "open",
                str(inc.count),
                redact(inc.subject or ""),
            )
        )
    _table(rows)
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
