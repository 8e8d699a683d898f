"""The scheduler process: stand by, take the lease, sync, fire, re-send, hand over.

One loop on the main thread does the lease work; APScheduler fires on its own
thread only while this process holds the lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import dramatiq
from sqlalchemy import Engine

from services import metrics
from services.redact import redact
from services.scheduler.broken import BrokenSchedules
from services.scheduler.dispatch import Dispatcher
from services.scheduler.fenced import FencedScheduler, FireHandler
from services.scheduler.jobstore import ScheduleJobStore
from services.scheduler.lease import Lease
from services.scheduler.sync import sync_jobs
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.fence import Fence
from services.store.instances import InstanceRegistry
from services.store.retention import prune
from services.store.schedule_rows import sync_schedule_rows
from services.timeutil import utcnow
from services.watch.alerter import Alerter
from services.watch.watchdog import Watchdog, WatchdogRunner

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: How often a standby tries to take the lease: a released lease is taken within this.
STANDBY_POLL_SECONDS = 0.25
#: How often the leader re-sends rows left pending.
RESEND_EVERY_SECONDS = 1.0
#: How often the leader trims history older than the retention period.
PRUNE_EVERY_SECONDS = 600.0


class SchedulerService:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        broker: dramatiq.Broker,
        specs: dict[str, ScheduleSpec],
        lease: Lease,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.specs = specs
        self.lease = lease
        self.fence = Fence(engine, settings.instance_id)
        self.dispatcher = Dispatcher(broker, self.fence)
        self.registry = InstanceRegistry(engine, settings.instance_id, "scheduler")
        self.stopping = threading.Event()
        self.scheduler: FencedScheduler | None = None
        self.lease_changes = 0
        # The watchdog runs on its own thread, only while this replica leads.
        self.alerter = Alerter.from_settings(settings, specs, lambda: engine)
        self.watchdog = WatchdogRunner(
            Watchdog(engine, specs, self.alerter, settings), settings.watchdog_interval
        )
        #: monotonic time of the main loop's last pass, for /healthz.
        self.last_loop = time.monotonic()

    @property
    def leading(self) -> bool:
        return self.scheduler is not None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Block until ``stop()``; always hand the lease back on the way out."""
        self._safely(self.registry.register, "register instance")
        renew_every = self.settings.lease_ttl / 3
        next_renew = next_resend = next_beat = 0.0
        next_prune = time.monotonic() + 60.0  # not in the busy first minute of a leader
        try:
            while not self.stopping.is_set():
                now = self.last_loop = time.monotonic()
                if self.leading:
                    if now >= next_renew:
                        next_renew = now + renew_every
                        if not self._safely(self.lease.renew, "renew lease"):
                            self.step_down("lease lost")
                    if self.leading and not self.lease.valid():
                        self.step_down("lease expired before it could be renewed")
                    if self.leading and not self._firing_thread_alive():
                        # Holding the lease with a dead loop would stop all firing until a
                        # liveness probe restarts us (and compose never does): hand over.
                        self.step_down("APScheduler's thread died")
                    if self.leading and now >= next_resend:
                        next_resend = now + RESEND_EVERY_SECONDS
                        self._safely(
                            lambda: self.dispatcher.resend_pending(self.settings.resend_after),
                            "re-send pending fires",
                        )
                    if self.leading:
                        self.watchdog.kick(now, self.lease.valid)
                    if self.leading and now >= next_prune and self.settings.retention_days:
                        next_prune = now + PRUNE_EVERY_SECONDS
                        self._safely(self.prune_history, "prune history")
                elif self._safely(self.lease.acquire, "acquire lease"):
                    self.lead()
                    next_renew = time.monotonic() + renew_every
                if now >= next_beat:
                    next_beat = now + renew_every
                    self._safely(self.registry.beat, "heartbeat")
                self.stopping.wait(STANDBY_POLL_SECONDS)
        finally:
            self.step_down("shutting down")
            self._safely(self.registry.stop, "mark instance stopped")

    def prune_history(self) -> int:
        before = utcnow() - timedelta(days=self.settings.retention_days)
        return prune(self.engine, before)

    def lead(self) -> None:
        logger.info(
            "%s took the scheduler lease",
            self.settings.instance_id,
            extra={"action": "lease_acquired"},
        )
        self.lease_changes += 1
        broken = BrokenSchedules(self.alerter)  # one schedule's bad trigger stops only it
        triggers = broken.triggers(self.specs)
        handler = FireHandler(
            self.engine, self.fence, self.dispatcher, self.specs, triggers, on_broken=broken
        )
        store = ScheduleJobStore(self.engine, triggers)
        scheduler = FencedScheduler(handler, store, may_fire=self.lease.valid)
        try:
            sync_schedule_rows(self.engine, self.specs)
            sync_jobs(store, self.specs, triggers, on_broken=broken)
            self._safely(broken.settle, "resolve broken-schedule incidents")
            scheduler.start(paused=True)
            if not self.lease.valid():
                raise RuntimeError("the lease expired while syncing schedules")
            scheduler.resume()
        except Exception as exc:
            logger.error("could not start leading: %s", redact(str(exc)), exc_info=True)
            if scheduler.running:
                scheduler.shutdown(wait=False)
            self._safely(self.lease.release, "release lease")
            self.stopping.wait(1.0)  # let another replica try
            return
        self.scheduler = scheduler
        metrics.record_leading(True)
        self._safely(lambda: self.registry.set_leader(utcnow()), "record leadership")

    def step_down(self, reason: str) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is None:
            return
        logger.warning(
            "%s stops firing: %s", self.settings.instance_id, reason, extra={"action": "lease_lost"}
        )
        try:
            scheduler.shutdown(wait=False)
        except Exception:
            logger.exception("error stopping APScheduler")
        self._safely(self.lease.release, "release lease")
        metrics.record_leading(False)
        self._safely(lambda: self.registry.set_leader(None), "record step-down")

    def _firing_thread_alive(self) -> bool:
        thread = getattr(self.scheduler, "_thread", None)
        return thread is None or thread.is_alive()

    def health(self, max_silence: float = 30.0) -> tuple[bool, str]:
        """For /healthz: the main loop ticks; a leader's APScheduler thread is alive and ticks.

        APScheduler's thread can die (an exception escaping its loop) while the scheduler
        still claims to run, so the thread itself is checked, not only its last tick.
        """
        now = time.monotonic()
        if now - self.last_loop > max_silence:
            return False, f"main loop silent for {now - self.last_loop:.0f}s"
        scheduler = self.scheduler
        if scheduler is None:
            return True, "standby"
        thread = getattr(scheduler, "_thread", None)
        if thread is not None and not thread.is_alive():
            return False, "APScheduler thread is dead"
        if now - scheduler.last_tick > max_silence:
            return False, f"APScheduler loop silent for {now - scheduler.last_tick:.0f}s"
        return True, "leading"

    @staticmethod
    def _safely(call: Callable[[], T], what: str) -> T | None:
        try:
            return call()
        except Exception as exc:
            logger.warning("could not %s: %s", what, redact(str(exc)))
            return None
