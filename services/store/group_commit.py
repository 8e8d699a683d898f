"""Group commit for the worker's hot path on Postgres: one writer per process.

Every worker thread claims an attempt before its body runs and records its outcome after;
the body may not run before its claim is durable, nor its message be acknowledged before
its outcome is (services/worker/acks.py holds the acknowledgement meanwhile). Written one
by one, that is two statements, two commits and two plans per message, each holding a
connection and, on a small machine, competing for the same CPUs as the workers. Here each
worker thread hands its write to one writer thread (and waits, or not: ``finish_later``);
the writer takes everything waiting (up to ``MAX_BATCH``), writes all of it in one
prepared statement (one round trip, one commit), and wakes each waiting thread with its
own answer.

A claim the batch statement does not insert (the fire has its outcome, a duplicate, a
dead worker's attempt...) comes back undecided: the caller decides it with the checked,
one-by-one path (services/store/attempts.py).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine

from services.store.attempts_sql import CONSTANTS, EXECUTE, PREPARE, READERS, SESSION

logger = logging.getLogger(__name__)

#: Writes gathered into one statement at most.
MAX_BATCH = 128
#: Writer threads, each with its connection. One: measured with 8 worker threads on 2
#: cores, a second writer halved the batches (2.5 writes instead of 4) and added more
#: Postgres and thread-switching work than it saved in waiting.
WRITERS = 1


class Pending(Protocol):
    """A write queued with ``finish_later``."""

    def wait(self) -> Any: ...


@dataclass(slots=True)
class _Job:
    claim: bool
    #: A claim's or an outcome's values; the first is the message id, and one batch holds
    #: one write per message (a fire is touched once per statement).
    values: tuple[Any, ...]
    #: Held until the job's batch is written: the cheapest way for a thread to wait.
    done: threading.Lock = field(default_factory=threading.Lock)
    result: Any = None
    error: BaseException | None = None

    def wait(self) -> Any:
        """Block until the job's batch is committed; its result, or its batch's error."""
        self.done.acquire()
        self.done.release()  # the writer releases it once: open for any later wait
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    def __init__(self, engine: Engine, max_batch: int = MAX_BATCH, writers: int = WRITERS) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.writers = writers
        self._queue: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        #: Batches written and jobs in them, for the benchmark's report.
        self.batches = 0
        self.jobs = 0

    # -- called by worker threads ------------------------------------------------------

    def claim(self, values: tuple[Any, ...]) -> tuple[int, int] | None:
        """``(attempt id, fire id)`` when the claim won; None when it needs the checked path.

        ``values``: message id, attempt, schedule, started at, instance id.
        """
        result: tuple[int, int] | None = self._submit(_Job(True, values))
        return result

    def finish(self, values: tuple[Any, ...]) -> None:
        """Record an outcome (message id, attempt id, attempt, status, fire status, finished
        at, fire finished at, duration, error type, error message, traceback, result);
        returns once it is committed."""
        self._submit(_Job(False, values))

    def finish_later(self, values: tuple[Any, ...]) -> Pending:
        """Queue an outcome (as ``finish``) and return at once; ``wait()`` on the result
        blocks until it is committed (services/worker/acks.py acknowledges then)."""
        job = _Job(False, values)
        self._enqueue(job)
        return job

    def _submit(self, job: _Job) -> Any:
        self._enqueue(job)
        return job.wait()

    def _enqueue(self, job: _Job) -> None:
        job.done.acquire()  # held until the writer has committed the job's batch
        with self._wake:
            self._queue.append(job)
            self._wake.notify()
            if len(self._threads) < self.writers or not all(t.is_alive() for t in self._threads):
                self._threads = [t for t in self._threads if t.is_alive()]
                while len(self._threads) < self.writers:
                    thread = threading.Thread(
                        target=self._run, name="cronwork-group-commit", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        conn: Any = None
        while True:
            batch = self._take()
            try:
                conn = conn or self._connect()
                self._write(conn, batch)
            except BaseException as exc:  # every waiter learns it, and decides
                _drop(conn)
                conn = None
                for job in batch:
                    job.error = exc
            for job in batch:
                job.done.release()

    def _take(self) -> list[_Job]:
        with self._wake:
            while not self._queue:
                self._wake.wait()
            batch: list[_Job] = []
            keys: set[str] = set()
            held: list[_Job] = []
            while self._queue and len(batch) < self.max_batch:
                job = self._queue.popleft()
                if job.values[0] in keys:
                    held.append(job)  # a second write about one message: the next batch
                    continue
                keys.add(job.values[0])
                batch.append(job)
            self._queue.extendleft(reversed(held))
            return batch

    def _write(self, conn: Any, batch: list[_Job]) -> None:
        # Two JSON documents, not an array per column: psycopg2 quotes every element of an
        # array on its own, which cost more of the worker's CPU than the rest of the write.
        claims = [_claim_row(j.values) for j in batch if j.claim]
        outcomes = [_outcome_row(j.values) for j in batch if not j.claim]
        cursor = conn.cursor()
        try:
            cursor.execute(EXECUTE, (_json(claims), _json(outcomes), *CONSTANTS))
            won = {(r[0], r[1]): (r[2], r[3]) for r in cursor.fetchall()}
        finally:
            cursor.close()
        for job in batch:
            if job.claim:
                job.result = won.get((job.values[0], job.values[1]))
        self.batches += 1
        self.jobs += len(batch)

    def _connect(self) -> Any:
        conn = self.engine.raw_connection()
        conn.driver_connection.autocommit = True  # type: ignore[union-attr]
        cursor = conn.cursor()
        try:
            for reader in READERS:
                cursor.execute(reader)
            cursor.execute(PREPARE)
            for setting in SESSION:
                cursor.execute(setting)
        finally:
            cursor.close()
        return conn


def _drop(conn: Any) -> None:
    """Give up a connection that failed: the pool replaces it."""
    if conn is None:
        return
    try:
        conn.invalidate()
    except Exception:  # already gone: nothing to give back
        logger.debug("could not invalidate a broken connection", exc_info=True)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


def _claim_row(v: tuple[Any, ...]) -> dict[str, Any]:
    """A claim as the batch statement reads it (services/store/attempts_sql.py)."""
    return {"m": v[0], "n": v[1], "s": v[2], "t": _micros(v[3]), "w": v[4]}


def _outcome_row(v: tuple[Any, ...]) -> dict[str, Any]:
    """An outcome as the batch statement reads it; its message id is not written."""
    return {
        "aid": v[1],
        "n": v[2],
        "st": v[3],
        "fst": v[4],
        "t": _micros(v[5]),
        "ft": None if v[6] is None else _micros(v[6]),
        "ms": v[7],
        "et": v[8],
        "em": v[9],
        "tb": v[10],
        "r": v[11],
    }
