"""History older than the retention period is deleted; anything unfinished or recent stays."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, Table, func, insert, select, update

from services.store.engines import make_engine
from services.store.fence import Fence, request
from services.store.migrate import upgrade
from services.store.retention import prune
from services.store.tables import attempts, fires, incidents
from services.timeutil import utcnow
from tests.integration.conftest import spec


def _history(engine: Engine) -> None:
    """Fires 40 and 1 days old, finished or not, each with an attempt; two incidents."""
    now = utcnow()
    s = spec("nightly")
    rows = {
        "old_ok": (now - timedelta(days=40), "succeeded"),
        "old_missed": (now - timedelta(days=40, hours=1), "missed"),
        "old_running": (now - timedelta(days=40, hours=2), "running"),
        "new_ok": (now - timedelta(days=1), "succeeded"),
    }
    fence = Fence(engine, "test")
    won = fence.claim([request(s, at, "scheduled") for at, _ in rows.values()])
    assert len(won) == 4
    with engine.begin() as conn:
        for fire in won:
            status = next(st for at, st in rows.values() if at == fire.scheduled_for)
            conn.execute(update(fires).where(fires.c.id == fire.id).values(status=status))
            conn.execute(
                insert(attempts).values(
                    message_id=fire.message_id,
                    attempt=0,
                    fire_id=fire.id,
                    schedule="nightly",
                    status="succeeded" if status == "succeeded" else "running",
                    started_at=fire.scheduled_for,
                    instance_id="w1",
                )
            )
        for resolved in (now - timedelta(days=40), None):
            conn.execute(
                insert(incidents).values(
                    kind="overdue" if resolved else "failed",
                    schedule="nightly",
                    opened_at=now - timedelta(days=41),
                    last_seen_at=now - timedelta(days=41),
                    resolved_at=resolved,
                    details={},
                )
            )


def _count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _check(engine: Engine) -> None:
    _history(engine)
    deleted = prune(engine, utcnow() - timedelta(days=30))
    assert deleted == 2  # the old succeeded and the old missed fire
    with engine.connect() as conn:
        left = sorted(r.status for r in conn.execute(select(fires.c.status)))
        open_incidents = conn.execute(select(incidents.c.kind)).scalars().all()
    assert left == ["running", "succeeded"]  # unfinished old fire kept, recent kept
    assert _count(engine, attempts) == 2  # the deleted fires' attempts went with them
    assert open_incidents == ["failed"]  # the open one stays however old
    assert prune(engine, utcnow() - timedelta(days=30)) == 0


def test_prune_on_postgres(engine: Engine) -> None:
    _check(engine)


@pytest.mark.parametrize("budget", [0.0])
def test_prune_respects_its_time_budget(engine: Engine, budget: float) -> None:
    _history(engine)
    assert prune(engine, utcnow() - timedelta(days=30), budget_seconds=budget) == 0
    assert _count(engine, fires) == 4


def test_prune_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cw.sqlite3'}"
    upgrade(url)
    eng = make_engine(url)
    try:
        _check(eng)
    finally:
        eng.dispose()
