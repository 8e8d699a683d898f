"""cronwork's vocabulary: every status and kind it stores, spelled once.

These values are written to the database (CHECK constraints hold them there, see the
migrations), printed by the CLI, served by the JSON API and used as metric labels.
A ``StrEnum`` member *is* its string, so it goes into SQL and JSON as is.
"""

from __future__ import annotations

from enum import StrEnum


class FireStatus(StrEnum):
    """Where one fire (one scheduled time of one schedule) stands."""

    #: Row written, message not yet sent to the broker.
    PENDING = "pending"
    #: Message sent to the broker.
    ENQUEUED = "enqueued"
    #: An attempt is running.
    RUNNING = "running"
    #: An attempt failed and another will follow.
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    #: Final: retries exhausted, or an exception that is not retried.
    FAILED = "failed"
    #: Final: the last attempt hit its time limit.
    TIMED_OUT = "timed_out"
    #: Not run on purpose (overlap: skip, catchup: latest).
    SKIPPED = "skipped"
    #: Fell outside the catch-up window; never run.
    MISSED = "missed"
    #: Its worker died and the schedule says ``on_lost: abandon`` (or resends ran out).
    ABANDONED = "abandoned"


#: A fire in one of these has its outcome: nothing will change it again.
FINAL_FIRE_STATUSES = frozenset(
    {
        FireStatus.SUCCEEDED,
        FireStatus.FAILED,
        FireStatus.TIMED_OUT,
        FireStatus.SKIPPED,
        FireStatus.MISSED,
        FireStatus.ABANDONED,
    }
)
#: Not final yet: someone (the leader, a worker, the watchdog) still owes it an outcome.
UNFINISHED_FIRE_STATUSES = frozenset(set(FireStatus) - FINAL_FIRE_STATUSES)
#: "A previous run is still in progress" (``overlap: skip``): started, no outcome yet,
#: including the wait before a retry.
IN_PROGRESS_FIRE_STATUSES = frozenset({FireStatus.RUNNING, FireStatus.RETRYING})


class AttemptStatus(StrEnum):
    """How one attempt (one delivery of a fire's message that ran, or was skipped) went."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    #: Failed; the fire will be tried again.
    RETRYING = "retrying"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    #: Not run: the fire had already succeeded, a duplicate delivery, or overlap: skip.
    SKIPPED = "skipped"
    #: Its worker stopped heartbeating; the watchdog gave up on it.
    ABANDONED = "abandoned"


class FireKind(StrEnum):
    """Why a fire exists."""

    #: The trigger's own time, fired on time.
    SCHEDULED = "scheduled"
    #: A time missed while no scheduler led, fired late by the catch-up policy.
    CATCHUP = "catchup"
    #: ``cronwork trigger`` (or the dashboard's "trigger now").
    MANUAL = "manual"
    #: A tracked ad-hoc run of an actor, sent from application code or ``cronwork run``
    #: (services/adhoc.py): no schedule, scheduled for the moment it was sent.
    ADHOC = "adhoc"


#: A fire in one of these may be re-run from the dashboard (a new manual fire at now that
#: names it in ``rerun_of``): it ended without doing its work.
RERUNNABLE_FIRE_STATUSES = frozenset(
    {FireStatus.FAILED, FireStatus.TIMED_OUT, FireStatus.ABANDONED, FireStatus.MISSED}
)


class IncidentKind(StrEnum):
    """What the watchdog or a worker found wrong with a schedule."""

    OVERDUE = "overdue"
    STUCK = "stuck"
    LOST = "lost"
    NEVER_ENQUEUED = "never_enqueued"
    MISSED = "missed"
    FAILED = "failed"
    #: A fire has had no outcome for longer than its grace, whatever its status.
    UNFINISHED = "unfinished"
    #: A schedule whose trigger cannot compute its fire times at run time: skipped while
    #: the others fire (services/scheduler/broken.py); resolved by a leader that builds
    #: and syncs it cleanly again.
    BROKEN = "broken"


#: Incidents that are a state seen on each watchdog pass: resolved when no longer seen.
STATE_INCIDENTS = frozenset(
    {
        IncidentKind.OVERDUE,
        IncidentKind.STUCK,
        IncidentKind.NEVER_ENQUEUED,
        IncidentKind.UNFINISHED,
    }
)
#: Incidents that are events about a fire: resolved when a fire of the schedule at least
#: as new as the incident's newest one succeeds.
EVENT_INCIDENTS = frozenset({IncidentKind.FAILED, IncidentKind.MISSED, IncidentKind.LOST})


class AuditAction(StrEnum):
    """What a person (or a pause running out) did to a schedule: ``cronwork_audit.action``."""

    #: Fire now with the schedule's own arguments (dashboard, API or ``cronwork trigger``).
    TRIGGER = "trigger"
    #: A new manual fire for a fire that failed; the new fire's ``rerun_of`` names it.
    RERUN = "rerun"
    PAUSE = "pause"
    RESUME = "resume"
    #: A pause with an ``until`` ran out and the schedule fires again by itself.
    AUTO_RESUME = "auto_resume"


class ScheduleFilter(StrEnum):
    """The status filter of the dashboard's schedules page and ``GET /api/schedules``."""

    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"
    #: The last fire's final outcome was a failure (an open ``failed`` incident).
    FAILING = "failing"
    #: No outcome for the last expected fire within its grace (or nobody fires it).
    OVERDUE = "overdue"
    #: Any open incident.
    INCIDENT = "incident"
