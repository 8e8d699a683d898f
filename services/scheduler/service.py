"""The scheduler process: stand by, take the lease, sync, fire, re-send, hand over.

One loop on the main thread does the lease work; APScheduler fires on its own
thread only while this process holds the lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import dramatiq
from sqlalchemy import Engine

from services import metrics
from services.liveness import liveness_for
from services.outages import DATABASE, REDIS, Dependency, dependency_of
from services.redact import redact
from services.runtime import release_freed_memory
from services.scheduler.broken import BrokenSchedules
from services.scheduler.dispatch import Dispatcher
from services.scheduler.fenced import FencedScheduler, FireHandler
from services.scheduler.jobstore import ScheduleJobStore
from services.scheduler.lease import Lease
from services.scheduler.recovery import Recovery
from services.scheduler.sync import sync_jobs
from services.schedules.spec import KeepPolicy, ScheduleSpec
from services.settings import Settings
from services.store.fence import Fence
from services.store.instances import InstanceRegistry
from services.store.retention import Pruner, Retention
from services.store.schedule_rows import resume_expired, sync_schedule_rows
from services.timeutil import utcnow
from services.watch.alerter import Alerter
from services.watch.watchdog import Watchdog, WatchdogRunner

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: How often a standby tries to take the lease: a released lease is taken within this.
STANDBY_POLL_SECONDS = 0.25
#: The leader's periodic steps, in seconds between two runs of each.
RESEND_EVERY_SECONDS = 1.0
RECOVER_EVERY_SECONDS = 10.0
MAINTENANCE_EVERY_SECONDS = 30.0
PRUNE_EVERY_SECONDS = 600.0
#: A new leader lets its first busy minute pass before trimming history.
PRUNE_FIRST_AFTER_SECONDS = 60.0


@dataclass
class Step:
    """One periodic step of the leader's loop."""

    what: str
    every: float
    run: Callable[[], object]
    #: Whose outage a failure of this step means (logged once per outage).
    dependency: Dependency
    due: float = 0.0


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
        queues = {spec.queue for spec in specs.values()} | {"default"}
        self.recovery = Recovery.from_settings(settings, self.fence, queues)
        self.dispatcher = Dispatcher(broker, self.fence, may_send=lease.valid)
        self.registry = InstanceRegistry(engine, settings.instance_id, "scheduler")
        self.pruner = Pruner(
            engine,
            Retention.from_specs(
                specs,
                _days(settings.retention_days),
                adhoc=KeepPolicy(max_age=_days(settings.adhoc_retention_days)),
            ),
        )
        self.stopping = threading.Event()
        self.scheduler: FencedScheduler | None = None
        self.lease_changes = 0
        # The watchdog runs on its own thread, only while this replica leads.
        self.alerter = Alerter.from_settings(settings, specs, lambda: engine)
        self.watchdog = WatchdogRunner(
            Watchdog(engine, specs, self.alerter, settings, liveness_for(settings, engine)),
            settings.watchdog_interval,
        )
        #: What the leader does besides firing, each at its own pace.
        self.steps = [
            Step("re-send pending fires", RESEND_EVERY_SECONDS, self._resend_pending, DATABASE),
            # Firing resumes at a pause's `until` regardless (paused_names); this clears
            # the row and audits the resume once.
            Step("end expired pauses", RESEND_EVERY_SECONDS, self._resume_expired, DATABASE),
            Step("find lost messages", RECOVER_EVERY_SECONDS, self.recovery.resend_lost, REDIS),
            Step(
                "run queue maintenance",
                MAINTENANCE_EVERY_SECONDS,
                self.recovery.run_maintenance,
                REDIS,
            ),
            Step("prune history", PRUNE_EVERY_SECONDS, self.prune_history, DATABASE),
        ]
        #: monotonic time of the main loop's last pass, for /healthz.
        self.last_loop = time.monotonic()

    @property
    def leading(self) -> bool:
        return self.scheduler is not None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Block until ``stop()``; always hand the lease back on the way out."""
        self._safely(self.registry.register, "register instance", DATABASE)
        renew_every = self.settings.lease_ttl / 3
        next_renew = next_beat = 0.0
        try:
            while not self.stopping.is_set():
                now = self.last_loop = time.monotonic()
                if self.leading:
                    if now >= next_renew:
                        next_renew = now + renew_every
                        if not self._safely(self.lease.renew, "renew the lease", REDIS):
                            self.step_down("lease lost")
                    self._check_leadership()
                    self._run_due_steps(now)
                elif self._safely(self.lease.acquire, "acquire the lease", REDIS):
                    self.lead()
                    next_renew = time.monotonic() + renew_every
                    self._reset_steps()
                if now >= next_beat:
                    next_beat = now + renew_every
                    self._safely(self.registry.beat, "heartbeat", DATABASE)
                self.stopping.wait(STANDBY_POLL_SECONDS)
        finally:
            self.step_down("shutting down")
            self._safely(self.registry.stop, "mark instance stopped", DATABASE)

    def _check_leadership(self) -> None:
        if self.leading and not self.lease.valid():
            self.step_down("lease expired before it could be renewed")
        if self.leading and not self._firing_thread_alive():
            # Holding the lease with a dead loop would stop all firing until a liveness
            # probe restarts us (and compose never does): hand over.
            self.step_down("APScheduler's thread died")

    def _run_due_steps(self, now: float) -> None:
        for step in self.steps:
            if self.leading and now >= step.due:
                step.due = now + step.every
                self._safely(step.run, step.what, step.dependency)
        if self.leading:
            self.watchdog.kick(now, self.lease.valid)

    def _reset_steps(self) -> None:
        now = time.monotonic()
        for step in self.steps:
            step.due = now
            if step.run == self.prune_history:
                step.due = now + PRUNE_FIRST_AFTER_SECONDS

    def _resume_expired(self) -> object:
        return resume_expired(self.engine)

    def _resend_pending(self) -> int:
        return self.dispatcher.resend_pending(self.settings.resend_after)

    def prune_history(self) -> int:
        return self.pruner.prune()

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
            release_freed_memory()
            self._safely(broken.settle, "resolve broken-schedule incidents", DATABASE)
            scheduler.start(paused=True)
            if not self.lease.valid():
                raise RuntimeError("the lease expired while syncing schedules")
            scheduler.resume()
        except Exception as exc:
            logger.error("could not start leading: %s", redact(str(exc)), exc_info=True)
            if scheduler.running:
                scheduler.shutdown(wait=False)
            self._safely(self.lease.release, "release the lease", REDIS)
            self.stopping.wait(1.0)  # let another replica try
            return
        self.scheduler = scheduler
        metrics.record_leading(True)
        self._safely(lambda: self.registry.set_leader(utcnow()), "record leadership", DATABASE)

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
        self._safely(self.lease.release, "release the lease", REDIS)
        metrics.record_leading(False)
        self._safely(lambda: self.registry.set_leader(None), "record step-down", DATABASE)

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
    def _safely(call: Callable[[], T], what: str, dependency: Dependency) -> T | None:
        """Run one step; a server being away is logged once per outage, not per loop."""
        try:
            result = call()
        except Exception as exc:
            down = dependency_of(exc)
            if down is not None:
                down.failed(what, exc)
            else:
                logger.warning("could not %s: %s", what, redact(str(exc)), exc_info=True)
            return None
        dependency.ok()
        return result


def _days(days: float) -> timedelta | None:
    """A retention setting in days as a max_age; 0 means no age limit."""
    return timedelta(days=days) if days else None
