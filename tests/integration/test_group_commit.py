"""The worker's group commit against real Postgres: every thread gets its own answer, and
the batch statement finds its rows by index whatever the size of the history."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from services.store.attempts_sql import CONSTANTS, EXECUTE
from services.store.group_commit import GroupCommit, _claim_row, _json, _outcome_row
from services.vocabulary import AttemptStatus, FireStatus
from tests.integration.conftest import attempt_rows, fire_rows

pytestmark = pytest.mark.timeout(120)

AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _fill(engine: Engine, count: int) -> None:
    """``count`` enqueued fires of one schedule, message ids m1..m<count>."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO cronwork_fires (schedule, scheduled_for, kind, status, message_id,"
                " message, created_at, updated_at, attempts)"
                " SELECT 'noop', timestamptz '2026-01-01' + g * interval '1 second',"
                " 'scheduled', :status, 'm' || g, '{}'::jsonb, now(), now(), 0"
                " FROM generate_series(1, :count) AS g"
            ),
            {"status": FireStatus.ENQUEUED.value, "count": count},
        )
        conn.execute(text("ANALYZE cronwork_fires"))


def test_threads_claim_and_record_outcomes_each_with_its_own_answer(engine: Engine) -> None:
    _fill(engine, 40)
    commit = GroupCommit(engine)
    won: dict[str, tuple[int, int] | None] = {}

    def work(first: int) -> None:
        for i in range(first, 41, 8):
            mid = f"m{i}"
            won[mid] = claimed = commit.claim((mid, 0, "noop", AT, "w1"))
            assert claimed is not None
            attempt_id = claimed[0]
            status = AttemptStatus.SUCCEEDED if i % 2 else AttemptStatus.FAILED
            fire_status = FireStatus.SUCCEEDED if i % 2 else FireStatus.FAILED
            commit.finish(
                (mid, attempt_id, 0, status, fire_status, AT, AT, 5, None, None, None, None)
            )

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(won) == 40 and all(v is not None for v in won.values())
    by_message = {row.message_id: row for row in fire_rows(engine)}
    for i in range(1, 41):
        row = by_message[f"m{i}"]
        assert row.status == (FireStatus.SUCCEEDED if i % 2 else FireStatus.FAILED)
        assert row.attempts == 1
    claimed_ids = {v[0] for v in won.values() if v is not None}
    assert {a.id for a in attempt_rows(engine)} == claimed_ids
    # A second claim of an attempt that already has its row is not won by the batch.
    assert commit.claim(("m1", 0, "noop", AT, "w2")) is None


def test_the_batch_statement_looks_fires_up_by_index_in_a_young_history(
    engine: Engine,
) -> None:
    """json_to_recordset() claims 100 rows; planned for that, the statement read the whole
    fires table for each batch while it held under some 100,000 rows, and the plan made
    while the attempts table was small read all of it for every batch's outcomes."""
    _fill(engine, 5000)
    conn = GroupCommit(engine)._connect()
    try:
        cursor = conn.cursor()
        claims = _json([_claim_row((f"m{i}", 0, "noop", AT, "w1")) for i in range(1, 5)])
        done = (AttemptStatus.SUCCEEDED, FireStatus.SUCCEEDED)
        outcomes = _json([_outcome_row(("m9", 1, 0, *done, AT, AT, 1, None, None, None, None))])
        cursor.execute("EXPLAIN " + EXECUTE, (claims, outcomes, *CONSTANTS))
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.close()
    finally:
        conn.close()
    # Nor the attempts table, planned while it is empty and looked up as it grows.
    assert "Seq Scan" not in plan, plan
    assert "ix_cronwork_fires_message_id" in plan, plan
