"""Entry point handed to Dramatiq's CLI by ``cronwork worker``; runs in each worker process."""

from __future__ import annotations

import os

from services.locks import configure as configure_locks
from services.logs import configure_logging, configure_redaction
from services.runtime import engine_for, load_schedule_file, prepare_broker
from services.settings import Settings
from services.watch.sentry import init_sentry
from services.worker.alert_hook import install as install_alerts
from services.worker.broker import worker_broker

#: Set by ``cronwork worker`` for the processes Dramatiq's CLI spawns.
PROCESSES_ENV = "CRONWORK_WORKER_PROCESSES"
THREADS_ENV = "CRONWORK_WORKER_THREADS"


def setup() -> None:
    """Build the tracking broker from CRONWORK_* and import the actors (Dramatiq calls this)."""
    settings = Settings()
    configure_logging(settings, coalesce=True)  # a line per attempt, from every thread
    configure_redaction(settings)  # stored errors and alerts mask the configured secrets
    init_sentry(settings, dramatiq=True)  # before the broker: it patches Broker.__init__
    instance_id = settings.instance_id
    if int(os.environ.get(PROCESSES_ENV, "1")) > 1:
        instance_id = f"{instance_id}-{os.getpid()}"  # one id per worker process
    # Each worker thread keeps a connection for its claims and outcomes; two more for the
    # heartbeat and the alert store.
    pool_size = int(os.environ.get(THREADS_ENV, "8")) + 2
    broker = worker_broker(
        settings,
        engine_factory=lambda: engine_for(settings, pool_size=pool_size, pre_ping=False),
        instance_id=instance_id,
        # The same setting `cronwork worker --check` and the worker's /healthz read.
        heartbeat_file=settings.heartbeat_file,
    )
    # Before any actor runs: the locks it takes must know where they live.
    configure_locks(
        redis_url=settings.redis_url_value(), prefix=settings.redis_prefix, instance_id=instance_id
    )
    schedule_file = load_schedule_file(settings)
    prepare_broker(settings, schedule_file, broker)
    install_alerts(
        broker,
        settings,
        schedule_file.schedules,
        lambda: engine_for(settings, pool_size=2),
        instance_id,
    )
