"""Decide what to do with the fires that are due now: fire, skip or record as missed.

Pure functions (no IO), so every policy is unit-tested without a database.
APScheduler's own misfire handling (a 1 s grace by default) is not used at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from services.constants import MAX_MISSED_ROWS, ON_TIME_GRACE_SECONDS
from services.schedules.spec import Catchup
from services.vocabulary import FireKind

#: Fires handled per schedule in one scheduler tick; the rest wait for the next tick.
#: (Missed fires come on top, at most MAX_MISSED_ROWS of them.)
MAX_FIRES_PER_TICK = 1000


class Trigger(Protocol):
    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None: ...


@dataclass
class Plan:
    """What to write to the fence for one schedule's due fires."""

    fire: list[tuple[datetime, FireKind]] = field(default_factory=list)
    skipped: list[datetime] = field(default_factory=list)  # coalesced by policy
    missed: list[datetime] = field(default_factory=list)  # outside the catch-up window
    #: Missed fires not recorded one by one (a gap longer than MAX_MISSED_ROWS fires).
    missed_unrecorded: int = 0
    #: The job's next run time after this plan, or None when the trigger is exhausted.
    next_run_time: datetime | None = None


def plan_fires(
    trigger: Trigger,
    first: datetime,
    now: datetime,
    *,
    policy: Catchup,
    window: timedelta,
    grace: timedelta = timedelta(seconds=ON_TIME_GRACE_SECONDS),
    limit: int = MAX_FIRES_PER_TICK,
) -> Plan:
    """Plan the fires from ``first`` (the job's next_run_time) up to ``now``.

    - older than ``now - window``: missed (recorded, never run);
    - within ``grace`` of now: on time, fired (kind ``scheduled``);
    - in between (late): ``all`` fires each (kind ``catchup``), ``latest`` fires only
      the newest and skips the rest, ``none`` skips them all.
    """
    plan = Plan()
    window_start = now - window
    on_time_start = now - grace
    late: list[datetime] = []
    handled = 0
    t: datetime | None = first
    while t is not None and t <= now and handled < limit:
        if t < window_start:
            # Missed fires are bounded by MAX_MISSED_ROWS, not by ``limit``: were they
            # counted against it (both 1000), a long gap would be walked 1000 rows a tick
            # and the jump below never reached.
            if len(plan.missed) < MAX_MISSED_ROWS:
                plan.missed.append(t)
                t = trigger.get_next_fire_time(t, now)
                continue
            # A long gap: jump to the window instead of walking every fire in it.
            resume = trigger.get_next_fire_time(None, window_start)
            plan.missed_unrecorded += _count_between(trigger, t, window_start)
            t = resume
            continue
        if t < on_time_start:
            late.append(t)
        else:
            plan.fire.append((t, FireKind.SCHEDULED))
        handled += 1
        t = trigger.get_next_fire_time(t, now)

    more_due = t is not None and t <= now
    if policy == "all":
        plan.fire[:0] = [(lt, FireKind.CATCHUP) for lt in late]
    elif policy == "latest" and late and not plan.fire and not more_due:
        plan.fire.append((late[-1], FireKind.CATCHUP))
        plan.skipped.extend(late[:-1])
    else:
        plan.skipped.extend(late)
    plan.next_run_time = t
    return plan


def _count_between(trigger: Trigger, start: datetime, end: datetime, cap: int = 10_000) -> int:
    """How many fires lie in [start, end), counted up to ``cap`` (for the log line only)."""
    n = 0
    t: datetime | None = start
    while t is not None and t < end and n < cap:
        n += 1
        t = trigger.get_next_fire_time(t, end)
    return n
