"""A schedule row's strip: the newest fires of many schedules at once, ready to print.

``cronwork status`` reads 20 fires of every schedule (20,000 rows at 1,000 schedules):
on Postgres the times come back already written as ``services.timeutil.iso`` writes them
and the durations already computed, since parsing 60,000 timestamps and writing 20,000
back cost ten times what the query did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from services.store.tables import fires
from services.timeutil import as_utc, iso

#: One LATERAL probe of the (schedule, scheduled_for) index per name, so a schedule with
#: months of history costs as much as one with a day; each name's fires as one JSON array
#: of [id, status, time as ``iso`` writes it (microseconds only when there are some),
#: duration as ``views.duration_ms`` gives it].
_STRIP_PG = text(
    """
    SELECT n.name, json_agg(json_build_array(
               f.id, f.status,
               replace(to_char(f.scheduled_for AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
                       '.000000', '') || 'Z',
               trunc(extract(epoch FROM f.finished_at - f.started_at) * 1000)::bigint
           ) ORDER BY f.scheduled_for DESC) AS strip
    FROM unnest(CAST(:names AS varchar[])) AS n(name)
    CROSS JOIN LATERAL (
        SELECT id, scheduled_for, status, started_at, finished_at
        FROM cronwork_fires WHERE schedule = n.name
        ORDER BY scheduled_for DESC LIMIT :per
    ) AS f
    GROUP BY n.name
    """
)
#: SQLite (embedded: small history) has no LATERAL; a window over the names' fires.
_STRIP_SQLITE = """
    SELECT id, schedule, scheduled_for, status, started_at, finished_at FROM (
        SELECT id, schedule, scheduled_for, status, started_at, finished_at,
               row_number() OVER (PARTITION BY schedule ORDER BY scheduled_for DESC) AS n
        FROM cronwork_fires WHERE schedule IN ({names})
    ) WHERE n <= :per
"""


@dataclass(frozen=True, slots=True)
class StripFire:
    id: int
    #: ISO 8601 in UTC with a ``Z`` (``services.timeutil.iso``).
    scheduled_for: str
    status: str
    #: Finished minus started; None until it has both.
    duration_ms: int | None


def recent_fires(conn: Connection, names: Sequence[str], per: int) -> dict[str, list[StripFire]]:
    """The newest ``per`` fires of each name, newest first."""
    out: dict[str, list[StripFire]] = {}
    if not names:
        return out
    if conn.dialect.name == "postgresql":
        # One JSON array per name, newest first: 20,000 rows through the driver and the
        # result layer one by one cost three times what the query did.
        for name, strip in conn.execute(_STRIP_PG, {"names": list(names), "per": per}):
            out[name] = [StripFire(id_, at, status, ms) for id_, status, at, ms in strip]
        return out
    params = {f"n{i}": name for i, name in enumerate(names)}
    listed = ", ".join(f":{key}" for key in params)
    # Typed result columns: SQLite hands back text for times unless told.
    typed = [fires.c.id, fires.c.schedule, fires.c.scheduled_for, fires.c.status]
    typed += [fires.c.started_at, fires.c.finished_at]
    stmt = text(_STRIP_SQLITE.format(names=listed)).columns(*typed)
    found = conn.execute(stmt, {**params, "per": per}).all()
    for r in sorted(found, key=lambda r: as_utc(r.scheduled_for), reverse=True):  # type: ignore[arg-type,return-value]
        start, end = as_utc(r.started_at), as_utc(r.finished_at)
        ms = None if start is None or end is None else int((end - start).total_seconds() * 1000)
        out.setdefault(r.schedule, []).append(
            StripFire(r.id, iso(r.scheduled_for) or "", r.status, ms)
        )
    return out
