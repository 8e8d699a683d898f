"""APScheduler 3, made crash-safe: fires are fenced in the database before a job's
``next_run_time`` moves.

Stock ``BackgroundScheduler._process_jobs`` advances ``next_run_time`` even when
submitting the job failed (the fire is lost), lets a jobstore error kill its thread
while the scheduler still claims to run, and drops fires later than
``misfire_grace_time``. ``FencedScheduler`` keeps APScheduler's wake-up loop, its
triggers and its jobs table (through ``ScheduleJobStore``, services/scheduler/jobstore.py)
and replaces only that one method.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Engine

from services.constants import ON_TIME_GRACE_SECONDS
from services.scheduler.broken import check_fire_time, describe
from services.scheduler.catchup import plan_fires
from services.scheduler.dispatch import Dispatcher
from services.scheduler.jobstore import ScheduleJobStore
from services.schedules.spec import ScheduleSpec
from services.store.fence import Fence, Fire, FireRequest, request
from services.store.schedule_rows import paused_names
from services.vocabulary import FireKind, FireStatus

logger = logging.getLogger(__name__)

#: Longest sleep between two looks at the jobstore: pause/resume from the CLI and a
#: lost lease must take effect quickly even when no job is due for hours.
MAX_WAIT_SECONDS = 1.0
#: Wait after a database error before trying again (nothing advanced meanwhile).
RETRY_SECONDS = 1.0
#: Fence rows written per INSERT statement.
CLAIM_CHUNK = 500


class FireHandler:
    """Turns one due job into fence rows, and the won rows into messages."""

    def __init__(
        self,
        engine: Engine,
        fence: Fence,
        dispatcher: Dispatcher,
        specs: Mapping[str, ScheduleSpec],
        triggers: Mapping[str, BaseTrigger],
        on_broken: Callable[[str, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.fence = fence
        self.dispatcher = dispatcher
        self.specs = specs
        #: Built once per leadership from the specs: triggers are pure, never stored.
        self.triggers = triggers
        self.paused: set[str] = set()
        #: Sends of chunks already fenced, running while the next chunk is being fenced,
        #: and the marking of sent chunks enqueued, running while the next is sent.
        self.sending: list[Future[None]] = []
        self.settling: list[Future[int]] = []
        self._sender: ThreadPoolExecutor | None = None
        self._settler: ThreadPoolExecutor | None = None
        #: Called with (schedule, error) when a schedule's trigger fails; see plan().
        self.on_broken = on_broken

    def refresh_paused(self) -> None:
        self.paused = paused_names(self.engine)

    def plan(
        self, name: str, next_run_time: datetime, now: datetime
    ) -> tuple[datetime | None, list[FireRequest]]:
        """The job's next run time (None: remove it) and the fence rows for its due fires.

        A trigger that raises (a value ``check`` let through) costs only its own schedule:
        its job is removed, it is reported once (``on_broken``), and the tick goes on
        with the others, instead of failing, and retrying, for every schedule at once.
        """
        spec = self.specs.get(name)
        trigger = self.triggers.get(name)
        if spec is None:
            logger.warning("job %s has no schedule any more; removing it", name)
            return None, []
        if trigger is None:
            return None, []  # its trigger could not be built: reported then
        try:
            return self._plan(spec, trigger, next_run_time, now)
        except Exception as exc:
            if self.on_broken is not None:
                self.on_broken(name, describe(exc))
            else:
                logger.error("schedule %s is broken and skipped: %s", name, describe(exc))
            return None, []

    def _plan(
        self, spec: ScheduleSpec, trigger: BaseTrigger, next_run_time: datetime, now: datetime
    ) -> tuple[datetime | None, list[FireRequest]]:
        grace = timedelta(seconds=ON_TIME_GRACE_SECONDS)
        plan = plan_fires(
            trigger,
            next_run_time,
            now,
            policy=spec.catchup,
            window=max(spec.catchup_window, grace),
            grace=grace,
        )
        for t in (*(t for t, _ in plan.fire), *plan.skipped, *plan.missed, plan.next_run_time):
            check_fire_time(t)
        if spec.name in self.paused:
            return plan.next_run_time, []  # paused: time moves on, nothing fires
        reqs: list[FireRequest] = [request(spec, t, kind) for t, kind in plan.fire]
        reqs += [request(spec, t, FireKind.CATCHUP, FireStatus.SKIPPED) for t in plan.skipped]
        reqs += [request(spec, t, FireKind.SCHEDULED, FireStatus.MISSED) for t in plan.missed]
        for r in reqs[len(plan.fire) :]:
            object.__setattr__(r, "error", _why_not_run(r.status, spec))
        if plan.missed or plan.missed_unrecorded:
            logger.error(
                "%s: %d fire(s) missed outside the %s catch-up window%s",
                spec.name,
                len(plan.missed) + plan.missed_unrecorded,
                spec.catchup_window,
                f" (at least {plan.missed_unrecorded} more not recorded one by one)"
                if plan.missed_unrecorded
                else "",
                extra={"action": "fires_missed", "schedule": spec.name},
            )
        return plan.next_run_time, reqs

    def claim(self, reqs: list[FireRequest]) -> None:
        """Write the fence rows in chunks; each chunk's won fires are sent at once, on the
        sender thread, while the next chunk is written (``flush`` waits for them).

        Overlapping the two halves a burst's lag: a profile of 10,000 fires due in one
        second showed the fence inserts (mostly waiting on Postgres) and the sends (mostly
        waiting on Redis) taking as long as each other, one after the other. Every fire is
        still fenced, and its row committed, before its message is sent.
        """
        for start in range(0, len(reqs), CLAIM_CHUNK):
            won = self.fence.claim(reqs[start : start + CLAIM_CHUNK])
            if won:
                if self._sender is None or self._settler is None:
                    self._sender = ThreadPoolExecutor(1, thread_name_prefix="cronwork-send")
                    self._settler = ThreadPoolExecutor(1, thread_name_prefix="cronwork-mark")
                self.sending.append(self._sender.submit(self._send, won))

    def _send(self, won: list[Fire]) -> None:
        # Marking a chunk enqueued (an UPDATE on a table with seven indexes) runs beside the
        # next chunk's sends, and soon: a fire left pending past ``resend_after`` while a
        # long tick goes on would be sent again by the leader's re-send step.
        sent = self.dispatcher.push(won)
        if sent and self._settler is not None:
            self.settling.append(self._settler.submit(self.dispatcher.settle, sent))

    def flush(self) -> None:
        """Wait until what this tick won has been sent and marked enqueued; a fire whose
        send failed stays pending, to be sent again."""
        sending, self.sending = self.sending, []
        for future in sending:
            try:
                future.result()
            except Exception:
                # Dispatcher.push handles broker errors itself; whatever else failed left
                # its fires pending.
                logger.exception("sending fires failed; they stay pending for re-send")
        settling, self.settling = self.settling, []  # complete: every send has returned
        for done in settling:
            try:
                done.result()
            except Exception:
                logger.exception("marking sent fires failed; they stay pending for re-send")

    def close(self) -> None:
        """Stop the threads once what they were given is done; do not wait for them."""
        for pool in (self._sender, self._settler):
            if pool is not None:
                pool.shutdown(wait=False)


def _why_not_run(status: FireStatus, spec: ScheduleSpec) -> str:
    if status == FireStatus.MISSED:
        return f"missed: later than the catch-up window ({spec.catchup_window})"
    return f"skipped: catchup {spec.catchup} runs only the newest late fire"


class FencedScheduler(BackgroundScheduler):
    """APScheduler's wake-up thread over cronwork's jobstore; the fence decides what fires."""

    def __init__(
        self, handler: FireHandler, store: ScheduleJobStore, may_fire: Callable[[], bool]
    ) -> None:
        super().__init__(
            timezone=UTC,
            job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        )
        self.handler = handler
        self.store = store
        self.add_jobstore(store, "default")
        self.may_fire = may_fire
        #: monotonic time of the last loop pass, for /healthz.
        self.last_tick = time.monotonic()

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        self.handler.close()

    def _process_jobs(self) -> float | None:
        self.last_tick = time.monotonic()
        # Not only when paused: shutdown() wakes the loop thread for one last pass after
        # setting STATE_STOPPED, and that pass must not fire (e.g. a scheduler started
        # paused whose sync failed, or one stepping down).
        if self.state != STATE_RUNNING:
            return None
        try:
            return self._process_due()
        except Exception:
            # Never let the loop thread die: log and look again shortly.
            logger.exception("scheduler loop error; retrying", extra={"action": "loop_error"})
            return RETRY_SECONDS

    def _process_due(self) -> float:
        if not self.may_fire():
            return MAX_WAIT_SECONDS
        now = datetime.now(UTC)
        due = self.store.due(now)
        if due:
            self.handler.refresh_paused()
        try:
            # Plan and fence in chunks of jobs (a burst of thousands in one second): the
            # first chunk's fires are fenced, and sent, while the next is planned, instead
            # of after every job is planned. Then advance every job in one statement.
            # Fence first, then advance: a crash or a lost lease in between re-fences the
            # same times, which the unique rows turn into no-ops; nothing advances unfenced.
            advances: list[tuple[str, datetime | None]] = []
            for start in range(0, len(due), CLAIM_CHUNK):
                reqs: list[FireRequest] = []
                for name, next_run_time in due[start : start + CLAIM_CHUNK]:
                    next_run, job_reqs = self.handler.plan(name, next_run_time, now)
                    advances.append((name, next_run))
                    reqs += job_reqs
                if not self.may_fire():
                    logger.warning("lease lost; not firing %d due job(s)", len(due) - start)
                    return MAX_WAIT_SECONDS
                self.handler.claim(reqs)
            self.store.advance(advances)
        finally:
            self.handler.flush()
        next_time = self.store.get_next_run_time()
        if next_time is None:
            return MAX_WAIT_SECONDS
        wait = (next_time - datetime.now(UTC)).total_seconds()
        return min(max(wait, 0.0), MAX_WAIT_SECONDS)
