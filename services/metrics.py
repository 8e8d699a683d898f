"""Every Prometheus metric cronwork exports, in one place, and the helpers that update them.

Served on ``/metrics`` by :mod:`services.web.health`. The scheduler is one process and uses
prometheus_client's default registry. ``cronwork worker`` runs Dramatiq's worker
*processes*: it points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before spawning
them, every child writes its samples there (prometheus_client's multiprocess mode, chosen
at import time from that variable), and the parent's ``/metrics`` aggregates them with
``MultiProcessCollector`` (see :func:`exposition_registry`).

Updating a metric never raises into the fire or job path: every helper here swallows
(and logs at debug level) its own errors.

Label cardinality: ``schedule`` labels grow with the number of schedules (10,000 are
designed for); histograms by schedule keep few buckets for that reason, and the enqueue
lag histogram is labelled by ``kind`` only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from services.fire_message import FireOptions
from services.timeutil import as_utc, utcnow
from services.vocabulary import AttemptStatus, FireKind, FireStatus

logger = logging.getLogger(__name__)

#: Set by ``cronwork worker`` for its children; see the module docstring.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Fires by schedule, kind (scheduled|catchup|manual) and fence outcome: ``won`` (this
#: process inserted the pending row and sends it), ``skipped`` / ``missed`` (recorded by
#: the catch-up policy, not run), ``conflict`` (the row existed: another scheduler, or an
#: earlier pass of this one, already fenced that time).
FIRES = Counter(
    "cronwork_fires_total",
    "Fires fenced by this process, by schedule, kind and outcome.",
    ["schedule", "kind", "outcome"],
)
#: Seconds from a fire's scheduled time to its message reaching the broker (re-sends
#: included, so a broker outage shows as a long tail). By kind: catch-up fires are late
#: by design and would hide on-time lag if mixed in.
ENQUEUE_LAG = Histogram(
    "cronwork_enqueue_lag_seconds",
    "Seconds from a fire's scheduled time to its enqueue, by kind.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
#: 1 while this scheduler process holds the lease and runs APScheduler, else 0.
LEADER = Gauge(
    "cronwork_scheduler_leader",
    "1 while this scheduler process holds the lease and fires.",
    multiprocess_mode="livemax",
)
#: This process starting (``acquired``) or stopping (``released``) to lead.
LEASE_CHANGES = Counter(
    "cronwork_lease_changes_total",
    "Times this scheduler process started or stopped leading.",
    ["change"],
)
#: Finished attempts by schedule and status (succeeded, retrying, failed, timed_out,
#: skipped).
ATTEMPTS = Counter(
    "cronwork_attempts_total",
    "Finished attempts by schedule and status.",
    ["schedule", "status"],
)
#: Wall time of an attempt, by schedule (few buckets: one series set per schedule).
ATTEMPT_DURATION = Histogram(
    "cronwork_attempt_duration_seconds",
    "Attempt wall time in seconds, by schedule.",
    ["schedule"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
#: Unix time of the last succeeded attempt per schedule (max across worker processes):
#: alert on ``time() - cronwork_last_success_timestamp_seconds``.
LAST_SUCCESS = Gauge(
    "cronwork_last_success_timestamp_seconds",
    "Unix time of the last succeeded attempt, by schedule.",
    ["schedule"],
    multiprocess_mode="max",
)
#: Fires left pending (crash or broker outage between insert and send) that the leader
#: re-sent successfully.
PENDING_RESENT = Counter(
    "cronwork_pending_resent_total",
    "Pending fires re-sent by the leader.",
)


def exposition_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: all worker processes' samples in multiprocess mode, else
    this process's default registry."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


# -- helpers: each one swallows its own errors ----------------------------------------


def record_claim(requests: Sequence[Any], rows: Iterable[Any]) -> None:
    """Count a fence claim: ``requests`` are FireRequests, ``rows`` the RETURNING rows."""
    try:
        returned = {(r.schedule, as_utc(r.scheduled_for)): r.status for r in rows}
        for req in requests:
            status = returned.get((req.schedule, as_utc(req.scheduled_for)))
            outcome = (
                "conflict"
                if status is None
                else ("won" if status == FireStatus.PENDING else status)
            )
            FIRES.labels(req.schedule, req.kind, outcome).inc()
    except Exception:
        logger.debug("could not record fire metrics", exc_info=True)


def record_enqueued(message: dict[str, Any], scheduled_for: datetime) -> None:
    """Observe the lag of a fire whose stored ``message`` just reached the broker."""
    try:
        fire = FireOptions.from_options(message["options"])
        kind = fire.kind if fire is not None else FireKind.SCHEDULED
        scheduled = as_utc(scheduled_for) or utcnow()
        lag = (utcnow() - scheduled).total_seconds()
        ENQUEUE_LAG.labels(kind).observe(max(lag, 0.0))
    except Exception:
        logger.debug("could not record enqueue lag", exc_info=True)


def record_resent(count: int) -> None:
    try:
        if count:
            PENDING_RESENT.inc(count)
    except Exception:
        logger.debug("could not record re-sends", exc_info=True)


def record_leading(leading: bool) -> None:
    try:
        LEADER.set(1 if leading else 0)
        LEASE_CHANGES.labels("acquired" if leading else "released").inc()
    except Exception:
        logger.debug("could not record lease change", exc_info=True)


def record_attempt(schedule: str, status: str, duration_seconds: float | None) -> None:
    try:
        _child(ATTEMPTS, schedule, status).inc()
        if duration_seconds is not None:
            _child(ATTEMPT_DURATION, schedule).observe(max(duration_seconds, 0.0))
        if status == AttemptStatus.SUCCEEDED:
            _child(LAST_SUCCESS, schedule).set(time.time())
    except Exception:
        logger.debug("could not record attempt metrics", exc_info=True)


#: Labelled children already made: ``labels()`` validates and locks on every call, which
#: costs a worker more per attempt than the update itself.
_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (id(metric), labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child
