"""A worker in the test process: a tracking broker, a Dramatiq worker, a way to make fires.

Test modules import the fixtures ``harness_factory`` and ``harness`` from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from sqlalchemy import Engine

from services.scheduler.dispatch import Dispatcher
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, Fire, request
from services.vocabulary import FireKind
from services.worker.broker import worker_broker
from tests.integration.conftest import fire_rows
from tests.waiting import wait_for

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
FINAL = ("succeeded", "failed", "timed_out", "skipped")


class Harness:
    """A worker-side broker with tracking, a Dramatiq worker, and a way to make fires."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        engine_factory: Callable[[], Engine],
        instance_id: str = "worker-1",
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.engines: list[Engine] = []

        def factory() -> Engine:
            eng = engine_factory()
            self.engines.append(eng)
            return eng

        self.broker = worker_broker(settings, engine_factory=factory, instance_id=instance_id)
        self.fence = Fence(engine, "scheduler-1")
        self.dispatcher = Dispatcher(self.broker, self.fence)
        self.worker: dramatiq.Worker | None = None
        self._next = 0

    def actor(self, name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(fn: Callable[..., Any]) -> Any:
            return dramatiq.actor(actor_name=name, broker=self.broker, **options)(fn)

        return register

    def start(self) -> None:
        # Dramatiq's CLI emits process_boot before starting workers; TimeLimit starts
        # its watcher thread on it, so an in-process worker must emit it too.
        self.broker.emit_after("process_boot")
        self.worker = dramatiq.Worker(self.broker, worker_threads=2, worker_timeout=100)
        self.worker.start()

    def claim(self, s: ScheduleSpec, at: datetime | None = None) -> Fire:
        """Write one fire of ``s`` (a new scheduled time unless ``at`` is given)."""
        if at is None:
            at = T0 + timedelta(seconds=self._next)
            self._next += 1
        [won] = self.fence.claim([request(s, at, FireKind.SCHEDULED)])
        return won

    def fire(self, s: ScheduleSpec, at: datetime | None = None) -> Fire:
        """Claim and send one fire of ``s`` (a new scheduled time unless ``at`` is given)."""
        fire = self.claim(s, at)
        assert self.dispatcher.send([fire]) == 1
        return fire

    def wait_fire(self, fire: Fire, statuses: tuple[str, ...] = FINAL, timeout: float = 15) -> Any:
        def check() -> Any:
            rows = [r for r in fire_rows(self.engine) if r.id == fire.id]
            return rows[0] if rows and rows[0].status in statuses else None

        return wait_for(check, timeout=timeout, what=f"fire {fire.id} to become {statuses}")

    def drain(self, queue: str = "default") -> None:
        self.broker.join(queue, timeout=15_000)
        assert self.worker is not None
        self.worker.join()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout=10_000)
        self.broker.close()
        for eng in self.engines:
            eng.dispose()


@pytest.fixture(name="harness_factory")
def harness_factory_fixture(
    engine: Engine, pg_url: str, settings: Settings
) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(engine_factory: Callable[[], Engine] | None = None) -> Harness:
        h = Harness(engine, settings, engine_factory or (lambda: make_engine(pg_url)))
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()


@pytest.fixture(name="harness")
def harness_fixture(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()
