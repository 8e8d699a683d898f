"""Keep each schedule's history bounded: by count per status group and by age.

The leader trims a slice of schedules at a time (docs/design.md, retention): it ranks the
slice's fires with window functions over the ``(schedule, scheduled_for)`` unique index,
then deletes what its ``keep:`` policy lets go by id, at most ``BATCH`` fires per short
transaction. Nothing here locks a row a fire needs: the fence inserts new rows, and only
finished ones are deleted. Never deleted: an unfinished fire, the newest fire of a
schedule, a fire an open incident points at, or a fire younger than ``RECENT`` (its row is
the fence against a late claim of the same time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    Subquery,
    and_,
    case,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    true,
)

from services.schedules.spec import KeepPolicy, ScheduleSpec
from services.store.tables import attempts, fires, incidents
from services.timeutil import utcnow
from services.vocabulary import FINAL_FIRE_STATUSES, RERUNNABLE_FIRE_STATUSES, FireStatus

logger = logging.getLogger(__name__)

#: Fires deleted per transaction.
BATCH = 1000
#: Fires (index entries) per slice of schedules ranked at once; a schedule is never split.
SLICE_ROWS = 20_000
#: Deletable ids read per ranking of a slice (then deleted BATCH at a time).
SCAN = 10 * BATCH
#: Fires scheduled this recently are kept whatever the counts say.
RECENT = timedelta(minutes=10)

#: The status groups ``keep:`` counts: succeeded; failed (ended without doing its work:
#: failed, timed_out, abandoned, missed); skipped (not run on purpose), kept by the
#: ``succeeded`` count but counted apart, so skips never push successes out.
SUCCEEDED, FAILED, SKIPPED = 1, 2, 3
_GROUP = case(
    (fires.c.status == FireStatus.SUCCEEDED, literal(SUCCEEDED)),
    (fires.c.status.in_(sorted(RERUNNABLE_FIRE_STATUSES)), literal(FAILED)),
    (fires.c.status == FireStatus.SKIPPED, literal(SKIPPED)),
    else_=literal(0),
)


@dataclass(frozen=True)
class Retention:
    """The policy that holds for each schedule's fires; unset values mean "no limit"."""

    #: Schedule name -> its policy (``keep:`` over the global default).
    by_schedule: Mapping[str, KeepPolicy]
    #: Fires of any other schedule: removed ones, ad-hoc runs (their own default).
    fallback: KeepPolicy

    @classmethod
    def from_specs(
        cls,
        specs: Mapping[str, ScheduleSpec],
        max_age: timedelta | None,
        fallback: KeepPolicy | None = None,
    ) -> Retention:
        """``max_age``: the global default (CRONWORK_RETENTION_DAYS; None keeps all);
        ``fallback``: the policy of fires whose schedule is not in ``specs`` (by default
        the global one)."""
        base = KeepPolicy(max_age=max_age)
        return cls({n: s.keep.over(base) for n, s in specs.items()}, fallback or base)

    def bounded(self) -> bool:
        """Whether any fire may ever be deleted."""
        return any(_limits(p) for p in (self.fallback, *self.by_schedule.values()))


def _limits(policy: KeepPolicy) -> bool:
    return policy.succeeded is not None or policy.failed is not None or policy.max_age is not None


class Pruner:
    """Prunes on the leader; a pass cut short by its budget resumes where it stopped."""

    def __init__(
        self, engine: Engine, retention: Retention, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.retention = retention
        self.clock = clock
        #: The last schedule of the last slice done (None: start from the first).
        self.cursor: str | None = None

    def prune(self, *, budget_seconds: float = 2.0) -> int:
        """One pass over every schedule, or as much as ``budget_seconds`` allows.
        Returns the number of fires deleted (their attempts went with them)."""
        deadline = self.clock() + budget_seconds
        now = utcnow()
        total = 0
        while self.retention.bounded() and self.clock() < deadline:
            upto = self._slice_end(self.cursor)
            done, deleted = self._prune_slice(self.cursor, upto, now, deadline)
            total += deleted
            if not done:
                break  # the next pass does this slice again
            self.cursor = upto
            if upto is None:
                break  # the last slice: the next pass starts from the first
        if self.clock() < deadline and self.retention.fallback.max_age is not None:
            self._prune_incidents(now - self.retention.fallback.max_age)
        if total:
            logger.info("deleted %d fire(s)", total, extra={"action": "history_pruned"})
        return total

    def _slice_end(self, after: str | None) -> str | None:
        """The schedule at which a slice of about SLICE_ROWS fires after ``after`` ends
        (None: the slice runs to the last schedule)."""
        query = select(fires.c.schedule).order_by(fires.c.schedule).offset(SLICE_ROWS).limit(1)
        with self.engine.connect() as conn:
            found: str | None = conn.execute(query.where(*_within(after, None))).scalar()
        return found

    def _prune_slice(
        self, after: str | None, upto: str | None, now: datetime, deadline: float
    ) -> tuple[bool, int]:
        """Delete what the policies let go in (after, upto]: (finished?, fires deleted)."""
        total = 0
        with self.engine.connect() as conn:
            # Names as the database has them: its collation, not Python's, orders the slices.
            names = select(fires.c.schedule).where(*_within(after, upto)).distinct()
            named = [n for n in conn.execute(names).scalars() if n in self.retention.by_schedule]
        while True:
            with self.engine.connect() as conn:
                ids = list(conn.execute(self.deletable(after, upto, named, now)).scalars())
            for start in range(0, len(ids), BATCH):
                if self.clock() >= deadline:
                    return False, total
                total += self._delete(ids[start : start + BATCH])
            if len(ids) < SCAN:
                return True, total
            if self.clock() >= deadline:
                return False, total

    def deletable(
        self, after: str | None, upto: str | None, named: list[str], now: datetime
    ) -> Select[int]:
        """The ids of the fires in (after, upto] that may go, at most SCAN of them;
        ``named``: the slice's schedules that have a policy of their own."""
        newest_first = fires.c.scheduled_for.desc()
        ranked: Subquery = (
            select(
                fires.c.id,
                fires.c.schedule,
                fires.c.status,
                fires.c.scheduled_for,
                _GROUP.label("grp"),
                func.row_number()
                .over(partition_by=fires.c.schedule, order_by=newest_first)
                .label("newest"),
                func.row_number()
                .over(partition_by=(fires.c.schedule, _GROUP), order_by=newest_first)
                .label("pos"),
            )
            .where(*_within(after, upto))
            .subquery("ranked")
        )
        return (
            select(ranked.c.id)
            .where(
                ranked.c.newest > 1,
                ranked.c.status.in_(sorted(FINAL_FIRE_STATUSES)),
                ranked.c.scheduled_for < now - RECENT,
                ranked.c.id.not_in(_open_incident_fires()),
                self._let_go(ranked, named, now),
            )
            .limit(SCAN)
        )

    def _let_go(self, ranked: Subquery, named: list[str], now: datetime) -> ColumnElement[bool]:
        """Whether a ranked fire is past its schedule's policy (the fallback's if unnamed)."""
        by_policy: dict[KeepPolicy, list[str]] = {}
        for name in named:
            by_policy.setdefault(self.retention.by_schedule[name], []).append(name)
        parts = [
            and_(ranked.c.schedule.in_(names), _past(policy, ranked, now))
            for policy, names in by_policy.items()
            if _limits(policy)
        ]
        fallback = self.retention.fallback
        if _limits(fallback):
            unnamed = ranked.c.schedule.not_in(named) if named else true()
            parts.append(and_(unnamed, _past(fallback, ranked, now)))
        return or_(false(), *parts)

    def _delete(self, ids: list[int]) -> int:
        """Delete these fires and their attempts in one short transaction."""
        with self.engine.begin() as conn:
            # Checked again: an incident may have opened on one since it was ranked.
            gone = list(
                conn.execute(
                    delete(fires)
                    .where(fires.c.id.in_(ids), fires.c.id.not_in(_open_incident_fires()))
                    .returning(fires.c.id)
                ).scalars()
            )
            # Explicitly, not only by ON DELETE CASCADE: SQLite does not enforce foreign keys.
            if gone:
                conn.execute(delete(attempts).where(attempts.c.fire_id.in_(gone)))
        return len(gone)

    def _prune_incidents(self, before: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(incidents).where(
                    incidents.c.resolved_at.is_not(None), incidents.c.resolved_at < before
                )
            )


def _past(policy: KeepPolicy, ranked: Subquery, now: datetime) -> ColumnElement[bool]:
    """Whether a ranked fire is past ``policy``: too old, or beyond its group's count."""
    rules: list[ColumnElement[bool]] = []
    if policy.max_age is not None:
        rules.append(ranked.c.scheduled_for < now - policy.max_age)
    if policy.succeeded is not None:
        rules.append(and_(ranked.c.grp.in_((SUCCEEDED, SKIPPED)), ranked.c.pos > policy.succeeded))
    if policy.failed is not None:
        rules.append(and_(ranked.c.grp == FAILED, ranked.c.pos > policy.failed))
    return or_(false(), *rules)


def _within(after: str | None, upto: str | None) -> list[ColumnElement[bool]]:
    """Fires of the schedules in (after, upto]; None: no bound."""
    bounds: list[ColumnElement[bool]] = []
    if after is not None:
        bounds.append(fires.c.schedule > after)
    if upto is not None:
        bounds.append(fires.c.schedule <= upto)
    return bounds


def _open_incident_fires() -> Select[int | None]:
    return select(incidents.c.fire_id).where(
        incidents.c.resolved_at.is_(None), incidents.c.fire_id.is_not(None)
    )
