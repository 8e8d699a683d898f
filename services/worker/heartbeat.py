"""Worker heartbeats: the watchdog tells a dead worker from a slow job by these."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from services.store.instances import InstanceRegistry

logger = logging.getLogger(__name__)


class WorkerHeartbeat(Middleware):
    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        instance_id: str,
        interval: float,
        heartbeat_file: Path | None = None,
    ) -> None:
        self._engine_factory = engine_factory
        self.instance_id = instance_id
        self.interval = interval
        self.heartbeat_file = heartbeat_file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registry: InstanceRegistry | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._registry = InstanceRegistry(self._engine_factory(), self.instance_id, "worker")
        try:
            self._registry.register()
        except Exception:
            logger.exception("could not register worker %s", self.instance_id)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cronwork-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._registry is not None:
            try:
                self._registry.stop()
            except Exception:
                logger.warning("could not mark worker %s stopped", self.instance_id)

    def _run(self) -> None:
        self.beat()  # at once: `cronwork worker --check` passes as soon as the worker is up
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        if self.heartbeat_file is not None:
            try:
                self.heartbeat_file.touch()
            except OSError:
                logger.warning("could not touch heartbeat file %s", self.heartbeat_file)
        if self._registry is None:
            return
        try:
            self._registry.beat()
        except Exception:
            logger.warning("worker heartbeat write failed", exc_info=True)
