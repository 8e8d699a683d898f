"""Group commit for the worker's hot path on Postgres: one writer per process.

Every worker thread claims an attempt before its body runs and records its outcome after,
and neither may go on before its write is durable. Written one by one, that is two
statements, two commits and two plans per message, each holding a connection and, on a
small machine, competing for the same CPUs as the workers. Here each worker thread hands
its write to one writer thread and waits; the writer takes everything waiting (up to
``MAX_BATCH``), writes all of it in one prepared statement (one round trip, one commit),
and wakes each thread with its own answer. Nothing is acknowledged before it is
committed.

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
from typing import Any

from sqlalchemy import Engine

from services.store.attempts_sql import CLAIM_COLUMNS, CONSTANTS, EXECUTE, OUTCOME_COLUMNS, PREPARE

logger = logging.getLogger(__name__)

#: Writes gathered into one statement at most.
MAX_BATCH = 128
#: Writer threads, each with its connection. One: measured with 8 worker threads on 2
#: cores, a second writer halved the batches (2.5 writes instead of 4) and added more
#: Postgres and thread-switching work than it saved in waiting.
WRITERS = 1


@dataclass(slots=True)
class _Job:
    claim: bool
    #: CLAIM_COLUMNS or OUTCOME_COLUMNS; the first is the message id, and one batch holds
    #: one write per message (a fire is touched once per statement).
    values: tuple[Any, ...]
    #: Held until the job's batch is written: the cheapest way for a thread to wait.
    done: threading.Lock = field(default_factory=threading.Lock)
    result: Any = None
    error: BaseException | None = None


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

        ``values``: in CLAIM_COLUMNS order.
        """
        result: tuple[int, int] | None = self._submit(_Job(True, values))
        return result

    def finish(self, values: tuple[Any, ...]) -> None:
        """Record an outcome (OUTCOME_COLUMNS order); returns once it is committed."""
        self._submit(_Job(False, values))

    def _submit(self, job: _Job) -> Any:
        job.done.acquire()
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
        job.done.acquire()  # released by the writer once the batch is committed
        if job.error is not None:
            raise job.error
        return job.result

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
        claims = [j.values for j in batch if j.claim]
        outcomes = [j.values[1:] for j in batch if not j.claim]
        claim_columns = _columns(len(CLAIM_COLUMNS), claims)
        outcome_columns = _columns(len(OUTCOME_COLUMNS) - 1, outcomes)
        results = outcome_columns[-1]
        outcome_columns[-1] = [None if r is None else json.dumps(r) for r in results]
        cursor = conn.cursor()
        try:
            cursor.execute(EXECUTE, (*claim_columns, *outcome_columns, *CONSTANTS))
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
            cursor.execute(PREPARE)
            # Its plan does not depend on the arrays' contents: planning it again for each
            # batch (Postgres' default for the first executions, and later whenever a
            # custom plan looks cheaper) cost more than running it.
            cursor.execute("SET plan_cache_mode = force_generic_plan")
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


def _columns(width: int, rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows turned into one list per column: what the statement unnests."""
    return [[row[i] for row in rows] for i in range(width)]
