"""An attempt's outcome: decided once, written until it lands.

``decide`` turns what Dramatiq reports after a body ran (the result or the exception,
and ``message.failed`` as Retries set it) into the attempt's and the fire's status; the
alert hook, metrics and the log line read that decision instead of deciding again.

``OutcomeWriter`` writes it: on failure it retries in the worker thread for a bounded
time (the message stays unacknowledged meanwhile, so a process that dies now has its
message delivered again), then hands the write to a background thread that keeps trying
for a bounded time more. A worker that dies holding an unwritten outcome is found by the
watchdog's lost-worker check; one that gives up is found by its unfinished-fire check.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback as tb
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dramatiq.middleware.time_limit import TimeLimitExceeded

from services.outages import DATABASE, dependency_of
from services.redact import redact
from services.store.attempts import Outcome
from services.vocabulary import AttemptStatus, FireStatus

logger = logging.getLogger(__name__)

#: Error messages and tracebacks are cut to this many characters in the attempt row.
MAX_ERROR_CHARS = 4000
MAX_TRACEBACK_CHARS = 8000
#: How long a worker thread keeps retrying an outcome write before handing it over.
INLINE_RETRY_SECONDS = 30.0
#: How long the background thread keeps trying one outcome.
BACKGROUND_RETRY_SECONDS = 3600.0


def decide(
    *,
    message_id: str,
    attempt_id: int,
    fire_id: int | None,
    attempt: int,
    finished_at: datetime,
    duration_ms: int,
    result: Any,
    exception: BaseException | None,
    failed_for_good: bool,
    skip_reason: str | None = None,
) -> Outcome:
    """The attempt's status and its fire's, from what the body did and what Retries decided."""
    common: dict[str, Any] = {
        "message_id": message_id,
        "attempt_id": attempt_id,
        "fire_id": fire_id,
        "attempt": attempt,
        "finished_at": finished_at,
        "duration_ms": duration_ms,
    }
    if exception is None:
        if skip_reason is not None:  # the body chose not to run (a busy lock)
            return Outcome(
                status=AttemptStatus.SKIPPED,
                fire_status=FireStatus.SKIPPED,
                error_message=storable(redact(skip_reason))[:MAX_ERROR_CHARS],
                **common,
            )
        return Outcome(
            status=AttemptStatus.SUCCEEDED,
            fire_status=FireStatus.SUCCEEDED,
            result=jsonable(result),
            **common,
        )
    timed_out = isinstance(exception, TimeLimitExceeded)
    if failed_for_good:
        status = AttemptStatus.TIMED_OUT if timed_out else AttemptStatus.FAILED
        fire_status = FireStatus.TIMED_OUT if timed_out else FireStatus.FAILED
    else:
        status = AttemptStatus.TIMED_OUT if timed_out else AttemptStatus.RETRYING
        fire_status = FireStatus.RETRYING
    error_type = storable(type(exception).__name__)
    trace = "".join(tb.format_exception(type(exception), exception, exception.__traceback__))
    return Outcome(
        status=status,
        fire_status=fire_status,
        error_type=error_type,
        error_message=storable(redact(str(exception) or error_type))[:MAX_ERROR_CHARS],
        traceback=storable(redact(trace))[-MAX_TRACEBACK_CHARS:],
        **common,
    )


def storable(text: str) -> str:
    """``text`` as Postgres can store it: a NUL, or half a surrogate pair, written out as
    an escape. One outcome Postgres refuses would fail every write batched with it."""
    if text.isascii():
        return text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def jsonable(value: Any) -> Any:
    """The actor's return value if Postgres' JSON can hold it; otherwise a note saying it
    could not. Not NaN or infinities, a NUL or half a surrogate pair: Postgres refuses
    them, and with them every write batched with this one."""
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return {"unserializable": type(value).__name__}
    if "\\u0000" in text:
        return {"unserializable": type(value).__name__}
    return value


class OutcomeWriter:
    """Writes outcomes with ``write`` (a store's ``finish``), retrying until they land."""

    def __init__(
        self,
        write: Callable[[Outcome], None],
        *,
        inline_seconds: float = INLINE_RETRY_SECONDS,
        background_seconds: float = BACKGROUND_RETRY_SECONDS,
    ) -> None:
        self._write = write
        self.inline_seconds = inline_seconds
        self.background_seconds = background_seconds
        #: (give up at, outcome, what to do once it is written)
        self._backlog: deque[tuple[float, Outcome, Callable[[], None] | None]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def record(
        self,
        outcome: Outcome,
        *,
        inline: bool = True,
        then: Callable[[], None] | None = None,
    ) -> bool:
        """Write ``outcome``; True once it landed, False when it went to the background.

        ``inline``: keep trying here for ``inline_seconds`` first; False tries once.
        ``then``: called by the background thread once it wrote the outcome (not when it
        landed here, nor when the background gave up on it).
        """
        deadline = time.monotonic() + (self.inline_seconds if inline else 0.0)
        delay = 0.05
        while True:
            try:
                self._write(outcome)
                DATABASE.ok()
                return True
            except Exception as exc:
                self._failed(exc)
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        with self._wake:
            self._backlog.append((time.monotonic() + self.background_seconds, outcome, then))
            self._wake.notify()
        self._ensure_thread()
        logger.error(
            "the outcome of attempt %d (%s) is not recorded yet; retrying in the background",
            outcome.attempt,
            outcome.status,
            extra={"action": "outcome_deferred"},
        )
        return False

    @property
    def pending(self) -> int:
        return len(self._backlog)

    def _failed(self, exc: Exception) -> None:
        dependency = dependency_of(exc)
        if dependency is not None:
            dependency.failed("record an attempt's outcome", exc)
        else:
            logger.warning(
                "could not record an attempt's outcome: %s: %s",
                type(exc).__name__,
                redact(str(exc)),
            )

    def _ensure_thread(self) -> None:
        with self._wake:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._drain, name="cronwork-outcomes", daemon=True
                )
                self._thread.start()

    def _drain(self) -> None:
        delay = 0.5
        while True:
            with self._wake:
                while not self._backlog:
                    self._wake.wait()
                give_up_at, outcome, then = self._backlog[0]
            try:
                self._write(outcome)
                DATABASE.ok()
                delay = 0.5
                with self._wake:
                    self._backlog.popleft()
                if then is not None:
                    _tell(then)
                continue
            except Exception as exc:
                self._failed(exc)
            if time.monotonic() > give_up_at:
                with self._wake:
                    self._backlog.popleft()
                logger.error(
                    "gave up recording the outcome of attempt %d (%s); the watchdog will "
                    "report its fire as unfinished",
                    outcome.attempt,
                    outcome.status,
                    extra={"action": "outcome_lost"},
                )
                continue
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _tell(then: Callable[[], None]) -> None:
    """What follows a written outcome never stops the writer."""
    try:
        then()
    except Exception:
        logger.exception("after recording an outcome in the background")
