"""Entry point handed to Dramatiq's CLI by ``cronwork worker``; runs in each worker process."""

from __future__ import annotations

import os

from services.logs import configure_logging, configure_redaction
from services.runtime import engine_for, load_schedule_file, prepare_broker
from services.settings import Settings
from services.watch.sentry import init_sentry
from services.worker.alert_hook import install as install_alerts
from services.worker.broker import worker_broker


def setup() -> None:
    """Build the tracking broker from CRONWORK_* and import the actors (Dramatiq calls this)."""
    settings = Settings()
    configure_logging(settings)
    configure_redaction(settings)  # stored errors and alerts mask the configured secrets
    init_sentry(settings, dramatiq=True)  # before the broker: it patches Broker.__init__
    instance_id = settings.instance_id
    if int(os.environ.get("CRONWORK_WORKER_PROCESSES", "1")) > 1:
        instance_id = f"{instance_id}-{os.getpid()}"  # one id per worker process
    broker = worker_broker(
        settings,
        engine_factory=lambda: engine_for(settings, pool_size=8, pre_ping=False),
        instance_id=instance_id,
        # The same setting `cronwork worker --check` and the worker's /healthz read.
        heartbeat_file=settings.heartbeat_file,
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
