"""The watchdog: finds what went wrong with schedules and records it as incidents.

Runs on the lease holder only, every ``CRONWORK_WATCHDOG_INTERVAL`` seconds (default
30), on a thread of its own (``WatchdogRunner``) so a slow pass never delays lease
renewal on the leader's loop. Each pass (``Watchdog.check``) runs the checks of
services/watch/runs.py (lost, stuck, unfinished) and services/watch/fire_checks.py
(never enqueued, missed, failed, overdue), then resolves what is over:
overdue/stuck/never_enqueued/unfinished on the first pass that no longer sees them
(a pass whose check failed resolves nothing); failed/missed/lost when a fire of the
schedule at least as new as the incident's newest fire succeeds. Each opening,
reminder and recovery is one Slack message (services/watch/alerter.py).

A database outage fails every check of a pass: that is logged once per outage
(services/outages.py), not once per check and pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from services.liveness import Liveness
from services.outages import DATABASE, dependency_of
from services.redact import redact
from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.settings import Settings
from services.store.watch_queries import succeeded_since
from services.timeutil import utcnow
from services.vocabulary import EVENT_INCIDENTS, STATE_INCIDENTS, IncidentKind
from services.watch.alerter import Alerter
from services.watch.fire_checks import FireChecks
from services.watch.runs import AttemptChecks, UnfinishedFires

logger = logging.getLogger(__name__)


@dataclass
class Report:
    """What one pass found (for logs and tests): (kind, schedule) pairs, and changes."""

    found: set[tuple[str, str]] = field(default_factory=set)
    resolved: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)
    #: Checks that failed: their kinds are not resolved on this pass (nothing was seen).
    failed_steps: list[str] = field(default_factory=list)


class Watchdog:
    def __init__(
        self,
        engine: Engine,
        specs: Mapping[str, ScheduleSpec],
        alerter: Alerter,
        settings: Settings,
        liveness: Liveness,
    ) -> None:
        self.engine = engine
        self.specs = specs
        self.alerter = alerter
        self._report = Report()
        # A trigger that cannot be built is a broken schedule (services/scheduler/broken.py
        # reports it); the overdue check leaves it out rather than failing for everyone.
        triggers = {}
        for name, spec in specs.items():
            try:
                triggers[name] = build_trigger(spec)
            except Exception:
                logger.warning("watchdog: schedule %s has no usable trigger", name)
        lost_after = timedelta(seconds=settings.lost_after_seconds)
        self.attempt_checks = AttemptChecks(engine, specs, liveness, lost_after, self._finding)
        fire_checks = FireChecks(
            engine,
            specs,
            triggers,
            timedelta(seconds=settings.never_enqueued_after),
            self._finding,
        )
        #: The checks of one pass, in order.
        self.checks: list[tuple[str, Callable[[datetime], None]]] = [
            ("lost and stuck attempts", self.attempt_checks),
            ("never enqueued fires", fire_checks.never_enqueued),
            ("missed and failed fires", fire_checks.missed_and_failed),
            ("overdue schedules", fire_checks.overdue),
            ("unfinished fires", UnfinishedFires(engine, specs, self._finding)),
        ]

    def check(self, now: datetime | None = None) -> Report:
        now = now or utcnow()
        report = self._report = Report()
        for what, run in self.checks:
            try:
                run(now)
                DATABASE.ok()
            except Exception as exc:
                report.failed_steps.append(what)
                self._failed(f"check {what}", exc)
        report.resent = list(self.attempt_checks.resent)
        report.abandoned = list(self.attempt_checks.abandoned)
        if len(report.failed_steps) < len(self.checks):  # else the database is away
            self._resolve(now, report)
            try:
                self.alerter.redeliver(now)
            except Exception as exc:
                self._failed("redeliver alerts", exc)
        return report

    def _finding(self, kind: IncidentKind, schedule: str, now: datetime, **kw: Any) -> None:
        self._report.found.add((kind, schedule))
        self.alerter.finding(kind, schedule, now, **kw)

    def _resolve(self, now: datetime, report: Report) -> None:
        try:
            open_incidents = self.alerter.store.open_incidents()
        except Exception as exc:
            self._failed("list open incidents", exc)
            return
        for inc in open_incidents:
            try:
                if inc.kind in STATE_INCIDENTS:
                    clear = (inc.kind, inc.schedule) not in report.found and not (
                        report.failed_steps
                    )
                elif inc.kind in EVENT_INCIDENTS:
                    clear = succeeded_since(self.engine, inc.schedule, inc.fire_id, inc.opened_at)
                else:
                    clear = False
                if clear and self.alerter.resolve(inc, now) is not None:
                    report.resolved.append(inc.id)
            except Exception as exc:
                self._failed(f"resolve incident #{inc.id}", exc)

    @staticmethod
    def _failed(what: str, exc: Exception) -> None:
        dependency = dependency_of(exc)
        if dependency is not None:
            dependency.failed(f"watchdog: {what}", exc)
        else:
            logger.error(
                "watchdog could not %s: %s",
                what,
                redact(str(exc)),
                exc_info=True,
                extra={"action": "watchdog_error"},
            )


class WatchdogRunner:
    """Runs ``Watchdog.check`` on a thread of its own, at most one pass at a time."""

    def __init__(self, watchdog: Watchdog, interval: float) -> None:
        self.watchdog = watchdog
        self.interval = interval
        self._thread: threading.Thread | None = None
        self._next = 0.0

    def kick(self, monotonic_now: float, may_run: Callable[[], bool]) -> bool:
        """Start a pass if one is due and none is running; True if one started."""
        if monotonic_now < self._next or (self._thread is not None and self._thread.is_alive()):
            return False
        self._next = monotonic_now + self.interval

        def run() -> None:
            if not may_run():
                return
            try:
                self.watchdog.check()
            except Exception as exc:
                logger.error("watchdog pass failed: %s", redact(str(exc)), exc_info=True)

        self._thread = threading.Thread(target=run, name="cronwork-watchdog", daemon=True)
        self._thread.start()
        return True
