"""Keep each schedule's history bounded: by age, and by count per status group.

A pass on the leader (docs/design.md, retention) first walks the ``scheduled_for`` index
from the oldest fire to delete what is past its ``max_age``, then ranks the fires of the
schedules that have counts, ``GROUP`` schedules at a time, with window functions over the
``(schedule, scheduled_for)`` unique index, and deletes what lies beyond the counts. Both
delete by id, at most ``BATCH`` fires per short transaction; nothing here locks a row a
fire needs (the fence inserts new rows; only finished ones are deleted). Never deleted:
an unfinished fire, the newest fire of a schedule, a fire an open incident points at, or
a fire scheduled less than ``RECENT`` ago (its row fences a late claim of the same time).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    Subquery,
    and_,
    case,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
)

from services.constants import ADHOC_SCHEDULE_PREFIX
from services.schedules.spec import KeepPolicy, ScheduleSpec
from services.store.tables import Tz, attempts, fires, incidents
from services.timeutil import utcnow
from services.vocabulary import FINAL_FIRE_STATUSES, RERUNNABLE_FIRE_STATUSES, FireKind, FireStatus

logger = logging.getLogger(__name__)

#: Fires deleted per transaction.
BATCH = 1000
#: Schedules whose fires are ranked by one statement: at 1,000,000 fires, 50 keep the
#: plan on the (schedule, scheduled_for) index (200 tipped it to a parallel seq scan).
GROUP = 50
#: Ids read per ranking of a group (then deleted BATCH at a time).
SCAN = 10 * BATCH
#: Fires scheduled this recently are kept whatever the policy says.
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
    #: Fires of any other schedule: removed ones.
    fallback: KeepPolicy
    #: Ad-hoc runs (services/adhoc.py), all actors alike; None: the fallback's.
    adhoc: KeepPolicy | None = None

    @classmethod
    def from_specs(
        cls,
        specs: Mapping[str, ScheduleSpec],
        max_age: timedelta | None,
        fallback: KeepPolicy | None = None,
        adhoc: KeepPolicy | None = None,
    ) -> Retention:
        """``max_age``: the global default (CRONWORK_RETENTION_DAYS; None keeps all);
        ``fallback``: the policy of fires whose schedule is not in ``specs`` (by default
        the global one); ``adhoc``: that of ad-hoc runs (CRONWORK_ADHOC_RETENTION_DAYS)."""
        base = KeepPolicy(max_age=max_age)
        return cls({n: s.keep.over(base) for n, s in specs.items()}, fallback or base, adhoc)

    def policy_for(self, schedule: str) -> KeepPolicy:
        if self.adhoc is not None and schedule.startswith(ADHOC_SCHEDULE_PREFIX):
            return self.adhoc
        return self.by_schedule.get(schedule, self.fallback)


class Pruner:
    """Prunes on the leader; a pass cut short by its budget resumes where it stopped."""

    def __init__(
        self, engine: Engine, retention: Retention, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.retention = retention
        self.clock = clock
        #: The last schedule whose counts were applied in a pass the budget cut short.
        self.cursor: str | None = None

    def prune(self, *, budget_seconds: float = 2.0) -> int:
        """One pass: fires past their max_age, then fires beyond their counts, as far as
        ``budget_seconds`` allows. Returns the fires deleted (their attempts went too)."""
        deadline = self.clock() + budget_seconds
        now = utcnow()
        total = 0
        if self.clock() < deadline:
            total += self._prune_by_age(now, deadline)
        if self.clock() < deadline:
            total += self._prune_by_count(now, deadline)
        if self.clock() < deadline and self.retention.fallback.max_age is not None:
            self._prune_incidents(now - self.retention.fallback.max_age)
        if total:
            logger.info("deleted %d fire(s)", total, extra={"action": "history_pruned"})
        return total

    # -- by age: along the scheduled_for index, oldest first

    def _prune_by_age(self, now: datetime, deadline: float) -> int:
        query = self.past_max_age(now)
        total = 0
        after: datetime | None = None
        while query is not None and self.clock() < deadline:
            page = query if after is None else query.where(fires.c.scheduled_for >= after)
            with self.engine.connect() as conn:
                rows = conn.execute(page).all()
            if rows:
                total += self._delete([r.id for r in rows])
            if len(rows) < BATCH:
                break
            after = rows[-1].scheduled_for  # what was kept before it is not read again
        return total

    def past_max_age(self, now: datetime) -> Select[int, datetime] | None:
        """The oldest BATCH fires past their max_age (id, scheduled_for); None: no
        policy has one."""
        adhoc = self.retention.adhoc
        policies = (self.retention.fallback, *self.retention.by_schedule.values())
        ages = {p.max_age for p in (*policies, *([adhoc] if adhoc else []))}
        youngest = min((a for a in ages if a is not None), default=None)
        if youngest is None:
            return None
        # The policies whose max_age is not the fallback's, by max_age.
        by_age: dict[timedelta | None, list[str]] = {}
        for name, policy in self.retention.by_schedule.items():
            if policy.max_age != self.retention.fallback.max_age:
                by_age.setdefault(policy.max_age, []).append(name)
        cutoff = _cutoff(now, self.retention.fallback.max_age)
        whens: list[tuple[ColumnElement[bool], ColumnElement[datetime]]] = [
            (fires.c.schedule.in_(n), _cutoff(now, age)) for age, n in by_age.items()
        ]
        if adhoc is not None and adhoc.max_age != self.retention.fallback.max_age:
            whens.insert(0, (fires.c.kind == FireKind.ADHOC, _cutoff(now, adhoc.max_age)))
        if whens:
            cutoff = case(*whens, else_=cutoff)
        newer = fires.alias("newer")
        return (
            select(fires.c.id, fires.c.scheduled_for)
            .where(
                fires.c.scheduled_for < min(now - youngest, now - RECENT),
                fires.c.scheduled_for < cutoff,
                fires.c.status.in_(sorted(FINAL_FIRE_STATUSES)),
                fires.c.id.not_in(_open_incident_fires()),
                # Not the newest of its schedule.
                exists().where(
                    newer.c.schedule == fires.c.schedule,
                    newer.c.scheduled_for > fires.c.scheduled_for,
                ),
            )
            .order_by(fires.c.scheduled_for)
            .limit(BATCH)
        )

    # -- by count: a group of schedules ranked at a time

    def _prune_by_count(self, now: datetime, deadline: float) -> int:
        names = self._counted()
        first = 0 if self.cursor is None else bisect.bisect_right(names, self.cursor)
        total = 0
        for start in range(first, len(names), GROUP):
            group = names[start : start + GROUP]
            done, deleted = self._prune_group(group, now, deadline)
            total += deleted
            if not done:
                return total  # the next pass does this group again
            self.cursor = group[-1]
        self.cursor = None
        return total

    def _counted(self) -> list[str]:
        """The schedules whose policy counts, sorted: the named ones, and the others in
        the table if the fallback counts."""
        names = {n for n, p in self.retention.by_schedule.items() if _counts(p)}
        adhoc = self.retention.adhoc
        if _counts(self.retention.fallback) or (adhoc is not None and _counts(adhoc)):
            with self.engine.connect() as conn:
                names.update(
                    n
                    for n in conn.execute(_DISTINCT_SCHEDULES).scalars()
                    if n is not None
                    and n not in self.retention.by_schedule
                    and _counts(self.retention.policy_for(n))
                )
        return sorted(names)

    def _prune_group(self, group: list[str], now: datetime, deadline: float) -> tuple[bool, int]:
        """Delete what the counts let go in these schedules: (finished?, fires deleted)."""
        total = 0
        while True:
            with self.engine.connect() as conn:
                ids = list(conn.execute(self.beyond_counts(group, now)).scalars())
            for start in range(0, len(ids), BATCH):
                if self.clock() >= deadline:
                    return False, total
                total += self._delete(ids[start : start + BATCH])
            if len(ids) < SCAN:
                return True, total
            if self.clock() >= deadline:
                return False, total

    def beyond_counts(self, group: list[str], now: datetime) -> Select[int]:
        """The ids of fires of ``group`` beyond their policy's counts, at most SCAN."""
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
            .where(fires.c.schedule.in_(group))
            .subquery("ranked")
        )
        by_policy: dict[KeepPolicy, list[str]] = {}
        for name in group:
            policy = self.retention.policy_for(name)
            by_policy.setdefault(policy, []).append(name)
        return (
            select(ranked.c.id)
            .where(
                ranked.c.newest > 1,
                ranked.c.status.in_(sorted(FINAL_FIRE_STATUSES)),
                ranked.c.scheduled_for < now - RECENT,
                ranked.c.id.not_in(_open_incident_fires()),
                or_(
                    false(),
                    *(
                        and_(ranked.c.schedule.in_(names), _beyond(policy, ranked))
                        for policy, names in by_policy.items()
                    ),
                ),
            )
            .limit(SCAN)
        )

    # -- deleting

    def _delete(self, ids: list[int]) -> int:
        """Delete these fires and their attempts in one short transaction."""
        with self.engine.begin() as conn:
            # Checked again: an incident may have opened on one since it was read.
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


#: Before any fire: a cutoff that deletes nothing.
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def _cutoff(now: datetime, max_age: timedelta | None) -> ColumnElement[datetime]:
    return literal(_NEVER if max_age is None else now - max_age, Tz)


def _counts(policy: KeepPolicy) -> bool:
    return policy.succeeded is not None or policy.failed is not None


#: Each schedule in the fires table once, by skipping along the (schedule, time) index:
#: one probe per schedule, not a read of every fire.
_DISTINCT_SCHEDULES = text(
    f"""
    WITH RECURSIVE names(name) AS (
        SELECT min(schedule) FROM {fires.name}
        UNION ALL
        SELECT (SELECT min(schedule) FROM {fires.name} WHERE schedule > names.name)
        FROM names WHERE names.name IS NOT NULL
    )
    SELECT name FROM names
    """
)


def _beyond(policy: KeepPolicy, ranked: Subquery) -> ColumnElement[bool]:
    """Whether a ranked fire is beyond its group's count in ``policy``."""
    rules: list[ColumnElement[bool]] = []
    if policy.succeeded is not None:
        rules.append(and_(ranked.c.grp.in_((SUCCEEDED, SKIPPED)), ranked.c.pos > policy.succeeded))
    if policy.failed is not None:
        rules.append(and_(ranked.c.grp == FAILED, ranked.c.pos > policy.failed))
    return or_(false(), *rules)


def _open_incident_fires() -> Select[int | None]:
    return select(incidents.c.fire_id).where(
        incidents.c.resolved_at.is_(None), incidents.c.fire_id.is_not(None)
    )
