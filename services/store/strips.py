"""A schedule row's strip: the newest fires of many schedules at once, ready to print.

``cronwork status --json`` reads 20 fires of every schedule (20,000 at 1,000 schedules).
On Postgres each schedule's fires come back as one JSON text, written by the query with
the keys, the times (as ``services.timeutil.iso`` writes them) and the durations that
``status --json`` prints, so Python parses it in one C call per schedule instead of
building 20,000 dicts and formatting 20,000 timestamps itself (bench/history.py: the
strips cost 40 ms at 1,000 schedules this way, 100-160 ms through ``json_build_array``,
about three times that row by row through the driver).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from services.store.tables import fires
from services.timeutil import as_utc, iso

#: One LATERAL probe of the (schedule, scheduled_for) index per name, so a schedule with
#: months of history costs as much as one with a day. Each fire is written as its strip
#: object then its duration in ms (or null), alternately, so one ``json.loads`` gives both
#: and slicing splits them. Every value is a number, a checked status word or a formatted
#: time: nothing in it needs JSON escaping. ``date_part`` (a double) rather than
#: ``extract`` (a numeric, several times slower): the same float arithmetic as
#: ``views.duration_ms``.
_STRIP_PG = text(
    """
    SELECT n.name, s.strip
    FROM unnest(CAST(:names AS varchar[])) AS n(name)
    CROSS JOIN LATERAL (
        SELECT string_agg(
                   '{"id":' || f.id
                   || ',"scheduled_for":"'
                   || to_char(f.scheduled_for AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                   || '","status":"' || f.status || '"},'
                   || coalesce(f.ms::text, 'null'),
                   ',' ORDER BY f.scheduled_for DESC) AS strip
        FROM (
            SELECT id, scheduled_for, status,
                   trunc(date_part('epoch', finished_at - started_at) * 1000)::bigint AS ms
            FROM cronwork_fires WHERE schedule = n.name
            ORDER BY scheduled_for DESC LIMIT :per
        ) AS f
    ) AS s
    WHERE s.strip IS NOT NULL
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
class Strip:
    """One schedule's newest fires, newest first."""

    #: ``{"id", "scheduled_for", "status"}`` each, as ``status --json`` prints them
    #: (times as ``services.timeutil.iso`` writes them).
    fires: list[dict[str, Any]]
    #: Finished minus started of each of those fires in ms; None until it has both.
    durations: list[int | None]

    @property
    def newest(self) -> dict[str, Any]:
        """The newest fire with its duration (``last_fire`` in ``status --json``)."""
        return {**self.fires[0], "duration_ms": self.durations[0]}

    @property
    def last_duration_ms(self) -> int | None:
        """How long the newest fire that finished took."""
        return next((ms for ms in self.durations if ms is not None), None)


def recent_fires(conn: Connection, names: Sequence[str], per: int) -> dict[str, Strip]:
    """The newest ``per`` fires of each name that has any."""
    out: dict[str, Strip] = {}
    if not names:
        return out
    if conn.dialect.name == "postgresql":
        for name, strip in conn.execute(_STRIP_PG, {"names": list(names), "per": per}):
            # to_char always writes the microseconds; iso leaves them out when zero.
            both = json.loads(f"[{strip.replace('.000000Z', 'Z')}]")
            out[name] = Strip(both[0::2], both[1::2])
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
        strip = out.setdefault(r.schedule, Strip([], []))
        strip.fires.append({"id": r.id, "scheduled_for": iso(r.scheduled_for), "status": r.status})
        strip.durations.append(ms)
    return out
