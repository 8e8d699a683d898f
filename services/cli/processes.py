"""The commands that run cronwork's processes: scheduler, worker, up, migrate, check."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import pickle
import threading
from typing import TYPE_CHECKING

import dramatiq

from services.cli.common import on_signals, open_engine
from services.errors import CronworkError
from services.schedules.spec import ScheduleSpec
from services.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from services.scheduler.service import SchedulerService
    from services.schedules.loader import ScheduleFile
    from services.web.dashboard import Dashboard

logger = logging.getLogger("cronwork")


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


def scheduler_service(
    settings: Settings,
    broker: dramatiq.Broker,
    specs: dict[str, ScheduleSpec],
    engine: Engine,
) -> SchedulerService:
    from services.scheduler.lease import make_lease
    from services.scheduler.service import SchedulerService

    return SchedulerService(settings, engine, broker, specs, make_lease(settings))


def dashboard(
    settings: Settings,
    engine: Engine,
    specs: dict[str, ScheduleSpec],
    broker: dramatiq.Broker | None,
) -> Dashboard | None:
    """The dashboard this process serves beside its probes (``CRONWORK_DASHBOARD``)."""
    if not settings.dashboard:
        return None
    from services.web.dashboard import Dashboard

    return Dashboard.from_settings(settings, engine, specs, broker)


def load_compacted(settings: Settings) -> ScheduleFile:
    """The validated schedules file, in memory of its own, for a long-lived process.

    Reading 10,000 schedules builds a YAML node tree of some 30 MB that is garbage once
    the specs exist, but the specs' objects sit among it in the allocator's arenas, which
    then cannot go back to the system: +41 MB resident for 14 MB of specs. Serialized,
    dropped, then read back once the tree is gone, they are packed anew and those arenas
    go (bench/scheduler_memory.py: some 20 MB less resident for the process's life).
    """
    from services.runtime import load_schedule_file

    blob = pickle.dumps(load_schedule_file(settings))
    gc.collect()
    loaded: ScheduleFile = pickle.loads(blob)
    return loaded


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from services.locks import configure as configure_locks
    from services.runtime import prepare_broker
    from services.watch.sentry import init_sentry
    from services.web.health import serve as serve_health

    if settings.embedded:
        raise CronworkError(
            "`cronwork scheduler` needs CRONWORK_REDIS_URL (the lease and the queue); "
            "for one process without Redis run `cronwork up`"
        )
    init_sentry(settings, dramatiq=False)  # plain error capture and watchdog check-ins
    configure_locks(settings)
    schedule_file = load_compacted(settings)
    broker = prepare_broker(settings, schedule_file)
    engine = open_engine(settings, wait=True)
    service = scheduler_service(settings, broker, schedule_file.schedules, engine)
    on_signals(service.stop)
    serve_health(
        settings,
        live=service.health,
        dashboard=dashboard(settings, engine, schedule_file.schedules, broker),
    )
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
    open_engine(settings, wait=True).dispose()
    from services.worker.boot import PROCESSES_ENV, THREADS_ENV

    os.environ[PROCESSES_ENV] = str(args.processes)
    os.environ[THREADS_ENV] = str(args.threads)
    # Spawn, not fork: the children import the actors onto their own tracking broker,
    # instead of inheriting modules already bound to the broker checked above.
    argv = ["services.worker.boot:setup", "--use-spawn", "--processes", str(args.processes)]
    argv += ["--threads", str(args.threads)]
    if args.queues:
        argv += ["--queues", *args.queues]
    with worker_parent(settings):  # /healthz etc., metrics dir and heartbeat file for children
        return int(dramatiq_main(make_argument_parser().parse_args(argv)) or 0)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from services.broker import sender_broker
    from services.locks import configure as configure_locks
    from services.runtime import engine_for, ensure_schema, load_schedule_file, prepare_broker
    from services.watch.sentry import init_sentry
    from services.web.health import serve as serve_health
    from services.worker.alert_hook import install as install_alerts
    from services.worker.broker import worker_broker

    schedule_file = load_schedule_file(settings)
    engine = engine_for(settings)
    ensure_schema(settings, engine, migrate=True, wait=True)
    init_sentry(settings, dramatiq=True)  # before the broker: it patches Broker.__init__
    configure_locks(settings)  # before any actor runs: its locks need to know where to live
    broker = worker_broker(settings, engine_factory=lambda: engine)
    prepare_broker(settings, schedule_file, broker)
    install_alerts(broker, settings, schedule_file.schedules, lambda: engine)
    if settings.embedded:
        logger.warning(
            "embedded mode: SQLite at %s, in-memory queue, local lease — single instance only; "
            "set CRONWORK_DATABASE_URL and CRONWORK_REDIS_URL to run replicas",
            settings.data_dir / "cronwork.sqlite3",
        )
        sender = broker  # the in-memory queue exists only in this broker
    else:
        # The scheduler sends as every sender does, with Redis timeouts of its own.
        sender = sender_broker(settings)
    service = scheduler_service(settings, sender, schedule_file.schedules, engine)
    worker = dramatiq.Worker(broker, worker_threads=args.threads)
    on_signals(service.stop)
    try:
        board = dashboard(settings, engine, schedule_file.schedules, sender)
        serve_health(settings, live=service.health, dashboard=board)
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


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    """The dashboard on its own (a separate Deployment): reads the database, and sends
    manual fires itself when Redis is configured (else the leader sends them)."""
    from services.runtime import load_schedule_file, prepare_broker
    from services.web.dashboard import Dashboard
    from services.web.health import serve as serve_http

    if settings.http_port == 0:
        raise CronworkError("`cronwork web` needs CRONWORK_HTTP_PORT (0 turns HTTP off)")
    schedule_file = load_schedule_file(settings)
    engine = open_engine(settings)
    broker = None if settings.embedded else prepare_broker(settings, schedule_file)
    board = Dashboard.from_settings(settings, engine, schedule_file.schedules, broker)
    stopping = threading.Event()
    on_signals(stopping.set)
    # Live while this process runs; ready while the database (and Redis) answer.
    server = serve_http(settings, live=lambda: (True, "serving"), dashboard=board)
    logger.info("dashboard %s serving", settings.instance_id)
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        if server is not None:
            server.stop()
        engine.dispose()
    return 0
