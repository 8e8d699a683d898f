"""Entry point handed to Dramatiq's CLI by ``cronwork worker``; runs in each worker process."""

from __future__ import annotations

import os
from pathlib import Path

from services.broker import make_broker
from services.logs import configure_logging
from services.runtime import engine_for, load_schedule_file, prepare_broker
from services.settings import Settings


def setup() -> None:
    """Build the tracking broker from CRONWORK_* and import the actors (Dramatiq calls this)."""
    settings = Settings()
    configure_logging(settings)
    instance_id = settings.instance_id
    if int(os.environ.get("CRONWORK_WORKER_PROCESSES", "1")) > 1:
        instance_id = f"{instance_id}-{os.getpid()}"  # one id per worker process
    heartbeat = os.environ.get("CRONWORK_HEARTBEAT_FILE")
    broker = make_broker(
        settings,
        engine_factory=lambda: engine_for(settings, pool_size=8),
        instance_id=instance_id,
        heartbeat_file=Path(heartbeat) if heartbeat else None,
    )
    prepare_broker(settings, load_schedule_file(settings), broker)
