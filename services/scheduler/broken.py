"""Schedules whose trigger fails at run time: skipped alone, reported once, the rest fire.

``cronwork check`` holds every value to ranges whose fire times are representable
(services/schedules/values.py), so this is the net under that: a trigger that still
raises (a bug, a time zone database that changed under a running process) must not take
every other schedule down with it, as one failing tick used to.

A broken schedule's job is removed from the jobstore (its trigger has no next time to
offer); the next leader's sync adds it back if its trigger works then. Each one opens
an incident of kind ``broken`` (one Slack message), folded on later leaders, and
resolved by the first leader that builds and syncs it cleanly (or no longer has it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from apscheduler.triggers.base import BaseTrigger

from services.redact import shown
from services.schedules.spec import ScheduleSpec
from services.schedules.triggers import build_trigger
from services.timeutil import utcnow
from services.vocabulary import IncidentKind
from services.watch.alerter import Alerter

logger = logging.getLogger(__name__)

#: Longest error text kept in the incident.
MAX_ERROR_CHARS = 500
#: Fire times a row can hold and be read back (Postgres takes years BC, Python has no
#: year 0, the jobstore converts to a Unix timestamp). `check` keeps schedules within
#: 1970-9000; this catches the rest before a write fails a whole tick or sync.
FIRST_FIRE_TIME = datetime(1969, 12, 30, tzinfo=UTC)
LAST_FIRE_TIME = datetime(9999, 1, 1, tzinfo=UTC)


def describe(exc: BaseException) -> str:
    return shown(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]


def check_fire_time(t: datetime | None) -> None:
    """Raise ValueError for a fire time no row can hold (None: no time, fine)."""
    if t is not None and not FIRST_FIRE_TIME <= t < LAST_FIRE_TIME:
        raise ValueError(f"fire time {t.isoformat()} is outside the years cronwork can store")


class BrokenSchedules:
    """The ``on_broken`` callback of one leadership, and what it saw."""

    def __init__(self, alerter: Alerter | None = None) -> None:
        self.alerter = alerter
        #: schedule name -> why, as first reported in this leadership.
        self.broken: dict[str, str] = {}

    def __call__(self, name: str, error: str) -> None:
        """Report ``name`` as broken, once per leadership (the tick may see it again)."""
        if name in self.broken:
            return
        self.broken[name] = error
        logger.error(
            "schedule %s is broken and skipped (the other schedules fire): %s",
            name,
            error,
            extra={"action": "schedule_broken", "schedule": name},
        )
        if self.alerter is None:
            return
        try:
            self.alerter.finding(
                IncidentKind.BROKEN,
                name,
                utcnow(),
                details={
                    "summary": f"its trigger cannot compute fire times: {error}; "
                    "the schedule is skipped until schedules.yaml is fixed",
                    "error": error,
                },
                subject=error[:200],
            )
        except Exception as exc:  # the log line above stands; never fail the tick
            logger.warning("could not record the broken incident of %s: %s", name, describe(exc))

    def triggers(self, specs: Mapping[str, ScheduleSpec]) -> dict[str, BaseTrigger]:
        """Each schedule's trigger; one that cannot be built is reported and left out."""
        out: dict[str, BaseTrigger] = {}
        for name, spec in specs.items():
            try:
                out[name] = build_trigger(spec)
            except Exception as exc:
                self(name, describe(exc))
        return out

    def settle(self) -> None:
        """Resolve open ``broken`` incidents of schedules this leadership found sound."""
        if self.alerter is None:
            return
        now = utcnow()
        for incident in self.alerter.store.open_incidents():
            if incident.kind == IncidentKind.BROKEN and incident.schedule not in self.broken:
                self.alerter.resolve(incident, now)
