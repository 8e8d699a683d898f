"""The worker's hot-path SQL on Postgres: claims and outcomes, many in one statement.

One statement per batch of services/store/group_commit.py, prepared once per connection
(``PREPARE``), executed in autocommit (one round trip, one commit). The batch's claims
and outcomes come as two JSON arrays of objects (``json_to_recordset``), written by
group_commit's ``_claim_row`` and ``_outcome_row`` with the keys named here; timestamps
as microseconds since the epoch. The rules are those of services/store/attempts.py,
which states them and decides every case this statement leaves open. A batch never holds
two writes about one message: a fire is touched once per statement.
"""

from __future__ import annotations

from services.vocabulary import FINAL_FIRE_STATUSES, AttemptStatus, FireStatus

_SKIPPED = AttemptStatus.SKIPPED.value


def _at(micros: str) -> str:
    """SQL for the timestamp ``micros`` microseconds after the epoch: exact, and cheaper
    for both sides than timestamps as text."""
    return f"(timestamptz 'epoch' + {micros} * interval '1 microsecond')"


_CLAIM_COLUMNS = "m text, n int, s text, t bigint, w text"
_OUTCOME_COLUMNS = (
    "aid bigint, n int, st text, fst text, t bigint, ft bigint, ms int, et text, em text,"
    " tb text, r jsonb"
)


def _reader(name: str, columns: str) -> str:
    # json_to_recordset() tells the planner it returns 100 rows, and a batch holds a few.
    # Planned for 100, the statement scanned the whole fires table instead of looking each
    # fire up by its index while the table was young (under some 100,000 rows): 2-10 ms a
    # batch at 4,000 fires, growing with the table. A PL/pgSQL function is never inlined,
    # so its ROWS estimate is what the planner sees. Temporary (pg_temp): created on each
    # writer connection with the statement, no migration, nothing left behind.
    return f"""
CREATE FUNCTION pg_temp.{name}(json) RETURNS TABLE({columns})
LANGUAGE plpgsql STABLE ROWS 8 AS $$
BEGIN
    RETURN QUERY SELECT * FROM json_to_recordset($1) AS i({columns});
END
$$"""


#: Run once per connection, before ``PREPARE``: the batch's two readers.
READERS = (
    _reader("cronwork_claims", _CLAIM_COLUMNS),
    _reader("cronwork_outcomes", _OUTCOME_COLUMNS),
)

#: Outcomes first: each attempt row gets its outcome, and its fire follows only while
#: that attempt is the fire's newest and the fire has no outcome yet (a late result never
#: overwrites what came after it). Then the claims that win: lock each fire that has no
#: outcome yet (in id order, so two batches never deadlock), insert each attempt unless it
#: already has a row, mark the fire running. Returns (message id, attempt, attempt id,
#: fire id) of the claims won.
PREPARE = f"""
PREPARE cronwork_batch(json, json, text[], text, text) AS
WITH o AS (
    SELECT i.aid AS attempt_id, i.n AS attempt, i.st AS status, i.fst AS fire_status,
           {_at("i.t")} AS finished_at, {_at("i.ft")} AS fire_finished_at,
           i.ms AS duration_ms, i.et AS error_type, i.em AS error_message,
           i.tb AS traceback, i.r AS result
    FROM pg_temp.cronwork_outcomes($2) AS i
), o_attempt AS (
    UPDATE cronwork_attempts AS att
    SET status = o.status, finished_at = o.finished_at, duration_ms = o.duration_ms,
        error_type = o.error_type, error_message = o.error_message,
        traceback = o.traceback, result = o.result
    FROM o WHERE att.id = o.attempt_id
    RETURNING att.fire_id, o.*
), o_fire AS (
    UPDATE cronwork_fires AS fire
    SET status = a.fire_status, finished_at = a.fire_finished_at, error = a.error_message,
        error_type = a.error_type, updated_at = a.finished_at
    FROM o_attempt AS a
    WHERE fire.id = a.fire_id AND fire.attempts = a.attempt + 1 AND fire.status <> ALL($3)
), c AS (
    SELECT i.m AS message_id, i.n AS attempt, i.s AS schedule,
           {_at("i.t")} AS started_at, i.w AS instance_id
    FROM pg_temp.cronwork_claims($1) AS i
), f AS (
    SELECT fire.id, c.*
    FROM cronwork_fires AS fire JOIN c ON c.message_id = fire.message_id
    WHERE fire.status <> ALL($3)
    ORDER BY fire.id
    FOR UPDATE OF fire
), c_attempt AS (
    INSERT INTO cronwork_attempts
        (message_id, attempt, fire_id, schedule, status, started_at, instance_id)
    SELECT message_id, attempt, id, schedule, $4, started_at, instance_id FROM f
    ON CONFLICT (message_id, attempt) WHERE status <> '{_SKIPPED}' DO NOTHING
    RETURNING id, fire_id, message_id, attempt, started_at
), c_fire AS (
    UPDATE cronwork_fires AS fire
    SET status = $5, started_at = COALESCE(fire.started_at, a.started_at),
        attempts = GREATEST(fire.attempts, a.attempt + 1), finished_at = NULL,
        updated_at = a.started_at
    FROM c_attempt AS a WHERE fire.id = a.fire_id
)
SELECT message_id, attempt, id, fire_id FROM c_attempt
"""
EXECUTE = "EXECUTE cronwork_batch(%s, %s, %s, %s, %s)"

#: The writer connection's settings; it runs nothing but this statement.
SESSION = (
    # Its plan does not depend on the batch's contents: planning it again for each batch
    # (Postgres' default for the first executions, and later whenever a custom plan looks
    # cheaper) cost more than running it.
    "SET plan_cache_mode = force_generic_plan",
    # A batch touches a few rows, each found by a unique index. The one plan is made when
    # the connection opens, from the statistics of that moment: planned while the
    # attempts table was small, the outcomes' update hash-joined a scan of the whole table
    # (1,600 rows read for 1 written, 0.6 ms of a 2 ms batch, growing with history for as
    # long as the connection lived). Only index lookups and nested loops are left to it.
    "SET enable_seqscan = off",
    "SET enable_hashjoin = off",
    "SET enable_mergejoin = off",
)

#: The statement's last three arguments, the same for every batch.
CONSTANTS = (
    sorted(s.value for s in FINAL_FIRE_STATUSES),
    AttemptStatus.RUNNING.value,
    FireStatus.RUNNING.value,
)
