"""Watchdog checks on fires: never enqueued, missed, failed (the backstop), overdue.

- never_enqueued: fires still ``pending`` ``CRONWORK_NEVER_ENQUEUED_AFTER`` seconds after
  they were written (the leader keeps re-sending them meanwhile: is Redis up?).
- missed: fires recorded ``missed`` (outside the catch-up window) no incident covers yet.
- failed (backstop): fires that ended ``failed``/``timed_out`` more than
  ``FAILED_BACKSTOP_DELAY`` ago that no incident covers (the worker's hook normally
  records them first, with more detail).
- overdue: a schedule (enabled, not paused) whose last expected fire time E (from its
  trigger, E <= now - grace) has no fire with an outcome at or after E. A fire that
  failed or was missed is not also overdue: those have incidents of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Engine

from services.schedules.spec import ScheduleSpec
from services.store import watch_queries as q
from services.timeutil import as_utc, iso
from services.vocabulary import FireStatus, IncidentKind

#: ``find(kind, schedule, now, **incident fields)`` records a finding.
Find = Callable[..., None]

#: The worker's hook gets this long to record a final failure before the backstop does.
FAILED_BACKSTOP_DELAY = timedelta(seconds=30)
#: Windows tried, smallest first, to find a trigger's latest fire time before a moment.
_PROBE_WINDOWS = (60, 3600, 86400, 32 * 86400, 400 * 86400)
#: Steps walked from a fire towards ``before`` before the window is halved instead.
_SHORT_WALK = 64
#: Halvings at most: 400 days halved 64 times is far below a microsecond.
_HALVINGS = 64


def last_fire_time(trigger: BaseTrigger, before: datetime) -> datetime | None:
    """The trigger's latest fire time at or before ``before`` (None if it has none)."""
    nearer = timedelta(0)
    for seconds in _PROBE_WINDOWS:
        farther = timedelta(seconds=seconds)
        t = trigger.get_next_fire_time(None, before - farther)
        if t is None or t > before:
            nearer = farther  # no fire from there to ``before``
            continue
        # The latest fire lies between ``before - farther`` and ``before - nearer``. A
        # frequent trigger with a long gap (every 7 minutes on weekdays, asked on a
        # Sunday) has thousands of fires in the window: halve it, keeping a fire at or
        # after its start and none after ``before`` from its end, until a short walk
        # from the fire found reaches the last one.
        lo, hi = before - farther, before - nearer
        for _ in range(_HALVINGS):
            last = _walk(trigger, t, before)
            if last is not None:
                return as_utc(last)
            mid = lo + (hi - lo) / 2
            found = trigger.get_next_fire_time(None, mid)
            if found is not None and found <= before:
                lo, t = mid, found
            else:
                hi = mid
        return as_utc(t)
    return None


def _walk(trigger: BaseTrigger, t: datetime, before: datetime) -> datetime | None:
    """The last fire at or before ``before`` reached from fire ``t`` in a few steps, or None."""
    for _ in range(_SHORT_WALK):
        nxt = trigger.get_next_fire_time(t, t)
        if nxt is None or nxt > before or nxt <= t:
            return t
        t = nxt
    return None


class LastFireTimes:
    """``last_fire_time`` of each schedule, remembered between the watchdog's passes.

    Computed afresh, it walks each trigger several times a pass: on a leader with 10,000
    schedules that was nine tenths of its Python time (py-spy), a third of a core, in a
    thread that shares the GIL with the one that fires. The answer only changes once the
    trigger's next time after it has passed, so each schedule keeps (trigger, answer,
    the moment it was asked for, that next time) and is walked again only then.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[BaseTrigger, datetime | None, datetime, datetime | None]] = {}

    def __call__(self, name: str, trigger: BaseTrigger, before: datetime) -> datetime | None:
        known = self._known.get(name)
        if known is not None:
            was, last, asked, following = known
            # Same trigger, time moved forward (not back: a clock set back asks again),
            # and its next time has not come: the answer stands.
            if was is trigger and asked <= before and (following is None or before < following):
                return last
        last = last_fire_time(trigger, before)
        following = trigger.get_next_fire_time(last, last or before)
        following = as_utc(following)
        if following is None or last is None or following > last:
            self._known[name] = (trigger, last, before, following)
        return last


class FireChecks:
    def __init__(
        self,
        engine: Engine,
        specs: Mapping[str, ScheduleSpec],
        triggers: Mapping[str, BaseTrigger],
        never_enqueued_after: timedelta,
        find: Find,
    ) -> None:
        self.engine = engine
        self.specs = specs
        self.triggers = triggers
        self.never_enqueued_after = never_enqueued_after
        self.find = find
        self.last_fire_time = LastFireTimes()

    def never_enqueued(self, now: datetime) -> None:
        for r in q.pending_by_schedule(self.engine, now - self.never_enqueued_after):
            self.find(
                IncidentKind.NEVER_ENQUEUED,
                r.schedule,
                now,
                details={
                    "summary": f"{r.n} fire(s) still pending (not in the queue), the oldest "
                    f"written {iso(r.oldest)}; the leader keeps re-sending them — is Redis up?",
                    "pending_fires": r.n,
                },
                subject=f"{r.n} pending fire(s), newest {r.newest}",
            )

    def missed_and_failed(self, now: datetime) -> None:
        groups: dict[tuple[IncidentKind, str], list[Any]] = {}
        for f in q.uncovered_missed_and_failed(self.engine, now):
            kind = IncidentKind.MISSED if f.status == FireStatus.MISSED else IncidentKind.FAILED
            finished = as_utc(f.finished_at)
            if kind == IncidentKind.FAILED and finished and finished > now - FAILED_BACKSTOP_DELAY:
                continue  # the worker's hook is probably still recording it
            groups.setdefault((kind, f.schedule), []).append(f)
        for (kind, schedule), rows in groups.items():
            newest = rows[-1]
            spec = self.specs.get(schedule)
            details: dict[str, Any] = {
                "scheduled_for": iso(newest.scheduled_for),
                "actor": spec.actor if spec else newest.actor,
            }
            if kind == IncidentKind.MISSED:
                details["summary"] = (
                    f"{len(rows)} fire(s) missed (outside the catch-up window), "
                    f"the newest at {iso(newest.scheduled_for)}"
                )
            else:
                details.update(
                    error_type=newest.error_type, error=newest.error or "", status=newest.status
                )
            self.find(
                kind,
                schedule,
                now,
                fire_id=newest.id,
                subject=f"fire {newest.id}",
                details=details,
            )

    def overdue(self, now: datetime) -> None:
        rows = q.schedule_rows(self.engine)
        expected: dict[str, tuple[datetime, ScheduleSpec]] = {}
        for name, spec in self.specs.items():
            row = rows.get(name)
            trigger = self.triggers.get(name)
            if not spec.enabled or row is None or row.paused or trigger is None:
                continue
            try:
                e = self.last_fire_time(name, trigger, now - spec.overdue_grace())
            except Exception:  # a broken schedule has an incident of its own
                continue
            # A fire due before the schedule existed here is not owed.
            if e is not None and e >= as_utc(row.created_at):  # type: ignore[operator]
                expected[name] = (e, spec)
        if not expected:
            return
        latest = q.newest_final_times(self.engine, min(e for e, _ in expected.values()))
        for name, (e, spec) in expected.items():
            last = latest.get(name)
            if last is not None and last >= e:
                continue
            self.find(
                IncidentKind.OVERDUE,
                name,
                now,
                subject=f"fire due {iso(e)}",
                details={
                    "summary": f"the fire due {iso(e)} has no outcome after a grace of "
                    f"{spec.overdue_grace()} ({spec.describe_trigger()})",
                    "scheduled_for": iso(e),
                    "actor": spec.actor,
                },
            )
