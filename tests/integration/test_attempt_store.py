"""AttemptStore's decisions, on Postgres (its one-statement path) and SQLite (embedded).

Each case builds the rows a real run would leave and asks the store, so every rule of
the claim and the outcome is checked on both databases without a worker in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from services.liveness import DatabaseLiveness
from services.store.attempts import AttemptStore, Claim, Outcome
from services.store.engines import make_engine
from services.store.fence import Fence, Fire, request
from services.store.instances import InstanceRegistry
from services.store.migrate import upgrade
from services.store.schedule_rows import sync_schedule_rows
from services.store.tables import attempts, fires
from services.timeutil import utcnow
from services.vocabulary import AttemptStatus, FireKind, FireStatus
from tests.integration.conftest import spec

LOST_AFTER = 5.0


@pytest.fixture(params=["postgres", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
        upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def store(db: Engine) -> AttemptStore:
    return AttemptStore(db, DatabaseLiveness(db, LOST_AFTER))


def new_fire(db: Engine, name: str = "s", **kw: Any) -> Fire:
    s = spec(name, "a", **kw)
    sync_schedule_rows(db, {name: s})
    [fire] = Fence(db, "sched").claim([request(s, utcnow(), FireKind.SCHEDULED)])
    return fire


def claim(fire: Fire, attempt: int = 0, instance: str = "w1", **kw: Any) -> Claim:
    values: dict[str, Any] = {
        "message_id": fire.message_id,
        "attempt": attempt,
        "schedule": fire.schedule,
        "overlap": "allow",
        "instance_id": instance,
        "started_at": utcnow(),
    }
    values.update(kw)
    return Claim(**values)


def outcome(claimed: Any, status: AttemptStatus, fire_status: FireStatus) -> Outcome:
    return Outcome(
        message_id=f"message of attempt {claimed.attempt_id}",
        attempt_id=claimed.attempt_id,
        fire_id=claimed.fire_id,
        attempt=claimed.attempt,
        status=status,
        fire_status=fire_status,
        finished_at=utcnow(),
        duration_ms=5,
    )


def rows(db: Engine, fire: Fire) -> list[tuple[int, str]]:
    with db.connect() as conn:
        got = conn.execute(
            select(attempts.c.attempt, attempts.c.status)
            .where(attempts.c.fire_id == fire.id)
            .order_by(attempts.c.id)
        )
        return [(r.attempt, r.status) for r in got]


def fire_row(db: Engine, fire: Fire) -> Any:
    with db.connect() as conn:
        return conn.execute(select(fires).where(fires.c.id == fire.id)).one()


def beating(db: Engine, instance: str, ago: float = 0.0) -> None:
    registry = InstanceRegistry(db, instance, "worker")
    registry.register()
    with db.begin() as conn:
        from services.store.tables import instances

        conn.execute(
            update(instances)
            .where(instances.c.instance_id == instance)
            .values(heartbeat_at=utcnow() - timedelta(seconds=ago))
        )


def test_a_claim_runs_and_marks_the_fire_running(db: Engine) -> None:
    fire = new_fire(db)
    got = store(db).claim(claim(fire))
    assert got.attempt_id is not None and got.skip_reason is None and got.attempt == 0
    assert rows(db, fire) == [(0, "running")]
    row = fire_row(db, fire)
    assert (row.status, row.attempts) == ("running", 1)


def test_a_second_delivery_of_a_running_attempt_on_a_live_worker_is_skipped(db: Engine) -> None:
    fire = new_fire(db)
    beating(db, "w1")
    first = store(db).claim(claim(fire, instance="w1"))
    second = store(db).claim(claim(fire, instance="w2"))
    assert first.attempt_id is not None and second.attempt_id is None
    assert second.skip_reason == "duplicate delivery: attempt 0 is running on w1"
    assert rows(db, fire) == [(0, "running"), (0, "skipped")]


def test_a_delivery_of_a_dead_workers_attempt_takes_it_over_as_a_resend(db: Engine) -> None:
    fire = new_fire(db, max_retries=2)
    beating(db, "dead", ago=LOST_AFTER * 3)
    store(db).claim(claim(fire, instance="dead"))
    got = store(db).claim(claim(fire, instance="w2"))
    assert got.attempt_id is not None and got.attempt == 1
    assert rows(db, fire) == [(0, "abandoned"), (1, "running")]
    row = fire_row(db, fire)
    assert row.message["options"]["cronwork"]["resends"] == 1  # a re-send, not a retry
    assert "retries" not in row.message["options"] and row.attempts == 2


def test_a_delivery_of_an_attempt_that_already_ran_is_skipped(db: Engine) -> None:
    fire = new_fire(db)
    first = store(db).claim(claim(fire))
    store(db).finish(outcome(first, AttemptStatus.RETRYING, FireStatus.RETRYING))
    again = store(db).claim(claim(fire, attempt=0))
    assert again.skip_reason == "duplicate delivery: attempt 0 already ran (retrying)"
    retry = store(db).claim(claim(fire, attempt=1))
    assert retry.attempt_id is not None
    assert rows(db, fire) == [(0, "retrying"), (0, "skipped"), (1, "running")]


def test_a_delivery_for_a_fire_with_an_outcome_is_skipped(db: Engine) -> None:
    fire = new_fire(db)
    first = store(db).claim(claim(fire))
    store(db).finish(outcome(first, AttemptStatus.SUCCEEDED, FireStatus.SUCCEEDED))
    late = store(db).claim(claim(fire, attempt=3))
    assert late.skip_reason == "fire already succeeded"
    assert fire_row(db, fire).status == "succeeded"


def test_a_claim_whose_reply_was_lost_is_adopted_by_the_next_delivery(db: Engine) -> None:
    fire = new_fire(db)
    beating(db, "w1")
    lost = claim(fire, instance="w1")
    store(db).claim(lost)  # committed, but the worker never saw the answer
    again = store(db).claim(
        claim(fire, instance="w1", earlier_claim=(lost.instance_id, lost.started_at))
    )
    assert again.attempt_id is not None and again.attempt == 0
    assert rows(db, fire) == [(0, "running")]


def test_a_late_outcome_never_overwrites_a_newer_attempt(db: Engine) -> None:
    fire = new_fire(db, max_retries=2)
    beating(db, "dead", ago=LOST_AFTER * 3)
    old = store(db).claim(claim(fire, instance="dead"))
    new = store(db).claim(claim(fire, instance="w2"))  # takes over as attempt 1
    store(db).finish(outcome(old, AttemptStatus.FAILED, FireStatus.FAILED))
    row = fire_row(db, fire)
    assert row.status == "running"  # attempt 1 decides the fire, not the late attempt 0
    assert rows(db, fire) == [(0, "failed"), (1, "running")]
    store(db).finish(outcome(new, AttemptStatus.SUCCEEDED, FireStatus.SUCCEEDED))
    assert fire_row(db, fire).status == "succeeded"


def test_overlap_skip_records_a_skipped_fire_while_another_runs(db: Engine) -> None:
    first = new_fire(db, "ov", overlap="skip", every=timedelta(seconds=1))
    second_s = spec("ov", "a", overlap="skip")
    [second] = Fence(db, "sched").claim(
        [request(second_s, utcnow() + timedelta(seconds=1), FireKind.SCHEDULED)]
    )
    store(db).claim(claim(first, overlap="skip"))
    got = store(db).claim(claim(second, overlap="skip"))
    assert got.skip_reason == f"previous run (fire {first.id}) still running; overlap: skip"
    assert fire_row(db, second).status == "skipped"


def test_a_late_success_after_a_mistaken_abandonment_is_what_it_was(db: Engine) -> None:
    """The watchdog gave an attempt up while its worker was in fact still running it."""
    from services.store.watch_queries import abandon, running_attempts

    fire = new_fire(db, max_retries=0)
    first = store(db).claim(claim(fire, instance="w1"))
    [run] = running_attempts(db)
    assert abandon(db, run, utcnow(), "worker w1 stopped heartbeating", resend=True, max_resends=3)
    pending = fire_row(db, fire)
    assert pending.status == "pending"
    assert pending.message["options"]["cronwork"]["resends"] == 1

    store(db).finish(outcome(first, AttemptStatus.SUCCEEDED, FireStatus.SUCCEEDED))
    with db.connect() as conn:
        row = conn.execute(select(attempts).where(attempts.c.id == first.attempt_id)).one()
    # Recorded as what it was, and that it had been given up keeps its trace.
    assert row.status == "succeeded" and row.abandoned_at is not None
    assert fire_row(db, fire).status == "succeeded"  # no false failure, no retry used up
    resent = store(db).claim(claim(fire, attempt=1, instance="w2"))
    assert resent.skip_reason == "fire already succeeded"


def test_a_worker_lost_during_a_retry_is_resent_as_the_next_attempt(db: Engine) -> None:
    """Chaos seed 606: attempts 0 and 1 failed (Dramatiq's Retries sent each retry, which
    the stored message does not count); the worker running attempt 2 died. The re-send
    must be attempt 3, not attempt 1 again: every delivery of that was skipped as a
    duplicate, and the fire stayed open for good with no incident."""
    from services.fire_message import FireOptions, attempt_number
    from services.store.watch_queries import abandon, running_attempts

    fire = new_fire(db, max_retries=5)
    for n in (0, 1):
        tried = store(db).claim(claim(fire, attempt=n))
        store(db).finish(outcome(tried, AttemptStatus.RETRYING, FireStatus.RETRYING))
    store(db).claim(claim(fire, attempt=2))
    [run] = running_attempts(db)
    assert abandon(db, run, utcnow(), "worker w1 stopped heartbeating", resend=True, max_resends=3)
    options = fire_row(db, fire).message["options"]
    fire_options = FireOptions.from_options(options)
    assert fire_options is not None and fire_options.resends == 1  # one re-send, no retry
    assert attempt_number(options, fire_options) == 3
    resent = store(db).claim(claim(fire, attempt=3, instance="w2"))
    assert resent.skip_reason is None and resent.attempt == 3
    assert fire_row(db, fire).status == "running"
    # Dramatiq counts only the two failures against max_retries.
    assert options["retries"] == 2


def test_a_lost_message_is_sent_again_as_the_next_attempt(db: Engine) -> None:
    """The leader's re-send of a message the broker lost numbers it after the fire's
    newest attempt, even if the stored message says otherwise (a safety net for seed 606:
    a stale number was skipped as a duplicate at every delivery, the fire open for good)."""
    from services.fire_message import FireOptions, attempt_number, with_resends

    fire = new_fire(db, max_retries=5)
    for n in (0, 1, 2):
        tried = store(db).claim(claim(fire, attempt=n))
        store(db).finish(outcome(tried, AttemptStatus.RETRYING, FireStatus.RETRYING))
    stale = fire_row(db, fire).message
    stale = {**stale, "options": with_resends(stale["options"], 1)}  # reads as attempt 1
    with db.begin() as conn:
        conn.execute(
            update(fires)
            .where(fires.c.id == fire.id)
            .values(status=FireStatus.ENQUEUED, message=stale, updated_at=utcnow())
        )
    fence = Fence(db, "leader")
    [waiting] = fence.waiting(timedelta(seconds=-60))
    assert fence.requeue_lost(waiting, "message lost by the broker")
    options = fire_row(db, fire).message["options"]
    fire_options = FireOptions.from_options(options)
    assert fire_options is not None and attempt_number(options, fire_options) == 3
    resent = store(db).claim(claim(fire, attempt=3, instance="w2"))
    assert resent.skip_reason is None and resent.attempt == 3
