"""Worker heartbeats: the watchdog tells a dead worker from a slow job by these.

Each beat touches the heartbeat file (``cronwork worker --check`` and the worker's
/healthz read it), sets the worker's key in Redis (the liveness the watchdog trusts,
services/liveness.py) and moves ``heartbeat_at`` of its ``cronwork_instances`` row (what
``status`` shows; the liveness of embedded mode). A server being away is logged once
(services/outages.py), never per beat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from services.liveness import RedisBeacon
from services.outages import DATABASE, REDIS, dependency_of
from services.store.instances import InstanceRegistry

logger = logging.getLogger(__name__)


class WorkerHeartbeat(Middleware):
    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        instance_id: str,
        interval: float,
        heartbeat_file: Path | None = None,
        beacon_factory: Callable[[], RedisBeacon | None] = lambda: None,
    ) -> None:
        self._engine_factory = engine_factory
        self._beacon_factory = beacon_factory
        self.instance_id = instance_id
        self.interval = interval
        self.heartbeat_file = heartbeat_file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registry: InstanceRegistry | None = None
        self._beacon: RedisBeacon | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._registry = InstanceRegistry(self._engine_factory(), self.instance_id, "worker")
        self._beacon = self._beacon_factory()
        self._safely(self._registry.register, "register the worker", DATABASE)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cronwork-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # After the last job finished: from now on an attempt still "running" here is lost.
        if self._beacon is not None:
            self._safely(self._beacon.stop, "remove the worker's heartbeat", REDIS)
        if self._registry is not None:
            self._safely(self._registry.stop, "mark the worker stopped", DATABASE)

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
        if self._beacon is not None:
            self._safely(self._beacon.beat, "heartbeat to Redis", REDIS)
        if self._registry is not None:
            self._safely(self._registry.beat, "heartbeat to the database", DATABASE)

    @staticmethod
    def _safely(call: Callable[[], None], what: str, dependency: Any) -> None:
        try:
            call()
            dependency.ok()
        except Exception as exc:
            if dependency_of(exc) is not None:
                dependency.failed(what, exc)
            else:
                logger.warning("could not %s", what, exc_info=True)
