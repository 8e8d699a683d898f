"""The worker's hot-path SQL on Postgres: claims and outcomes, many in one statement.

One statement per batch of services/store/group_commit.py, prepared once per connection
(``PREPARE``), executed in autocommit (one round trip, one commit) with one array per
column (``unnest``). The rules are those of services/store/attempts.py, which states them
and decides every case this statement leaves open. A batch never holds two writes about
one message: a fire is touched once per statement.
"""

from __future__ import annotations

from services.vocabulary import FINAL_FIRE_STATUSES, AttemptStatus, FireStatus

_SKIPPED = AttemptStatus.SKIPPED.value

#: A claim's columns, in order.
CLAIM_COLUMNS = ("message_id", "attempt", "schedule", "started_at", "instance_id")
#: An outcome's columns, in order.
OUTCOME_COLUMNS = (
    "message_id",
    "attempt_id",
    "attempt",
    "status",
    "fire_status",
    "finished_at",
    "fire_finished_at",
    "duration_ms",
    "error_type",
    "error_message",
    "traceback",
    "result",
)

#: Outcomes first: each attempt row gets its outcome, and its fire follows only while
#: that attempt is the fire's newest and the fire has no outcome yet (a late result never
#: overwrites what came after it). Then the claims that win: lock each fire that has no
#: outcome yet (in id order, so two batches never deadlock), insert each attempt unless it
#: already has a row, mark the fire running. Returns (message id, attempt, attempt id,
#: fire id) of the claims won.
PREPARE = f"""
PREPARE cronwork_batch(
    text[], int[], text[], timestamptz[], text[],
    bigint[], int[], text[], text[], timestamptz[], timestamptz[], int[], text[], text[],
    text[], text[],
    text[], text, text
) AS
WITH o AS (
    SELECT * FROM unnest($6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        AS i(attempt_id, attempt, status, fire_status, finished_at, fire_finished_at,
             duration_ms, error_type, error_message, traceback, result)
), o_attempt AS (
    UPDATE cronwork_attempts AS att
    SET status = o.status, finished_at = o.finished_at, duration_ms = o.duration_ms,
        error_type = o.error_type, error_message = o.error_message,
        traceback = o.traceback, result = o.result::jsonb
    FROM o WHERE att.id = o.attempt_id
    RETURNING att.fire_id, o.*
), o_fire AS (
    UPDATE cronwork_fires AS fire
    SET status = a.fire_status, finished_at = a.fire_finished_at, error = a.error_message,
        error_type = a.error_type, updated_at = a.finished_at
    FROM o_attempt AS a
    WHERE fire.id = a.fire_id AND fire.attempts = a.attempt + 1 AND fire.status <> ALL($17)
), c AS (
    SELECT * FROM unnest($1, $2, $3, $4, $5)
        AS i(message_id, attempt, schedule, started_at, instance_id)
), f AS (
    SELECT fire.id, c.*
    FROM cronwork_fires AS fire JOIN c ON c.message_id = fire.message_id
    WHERE fire.status <> ALL($17)
    ORDER BY fire.id
    FOR UPDATE OF fire
), c_attempt AS (
    INSERT INTO cronwork_attempts
        (message_id, attempt, fire_id, schedule, status, started_at, instance_id)
    SELECT message_id, attempt, id, schedule, $18, started_at, instance_id FROM f
    ON CONFLICT (message_id, attempt) WHERE status <> '{_SKIPPED}' DO NOTHING
    RETURNING id, fire_id, message_id, attempt, started_at
), c_fire AS (
    UPDATE cronwork_fires AS fire
    SET status = $19, started_at = COALESCE(fire.started_at, a.started_at),
        attempts = GREATEST(fire.attempts, a.attempt + 1), finished_at = NULL,
        updated_at = a.started_at
    FROM c_attempt AS a WHERE fire.id = a.fire_id
)
SELECT message_id, attempt, id, fire_id FROM c_attempt
"""
EXECUTE = "EXECUTE cronwork_batch(" + ", ".join(["%s"] * 19) + ")"

#: The statement's last three arguments, the same for every batch.
CONSTANTS = (
    sorted(s.value for s in FINAL_FIRE_STATUSES),
    AttemptStatus.RUNNING.value,
    FireStatus.RUNNING.value,
)
