"""A fire's Dramatiq message: how the scheduler writes it and how a worker reads it.

One home for the message format. The fire's identity travels in the message option
``cronwork`` (``FIRE_OPTION``); Dramatiq's own options (``max_retries``, ``min_backoff``,
``max_backoff``, ``time_limit``, ``retries``) sit beside it. Whatever the scheduler writes
here, tracking, the alert hook and metrics read back through :class:`FireOptions`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.constants import FIRE_OPTION, LOCK_OPTION
from services.schedules.spec import ScheduleSpec
from services.timeutil import iso
from services.vocabulary import FireKind


def ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


@dataclass(frozen=True)
class FireOptions:
    """What a cronwork message says about its fire (``options["cronwork"]``)."""

    schedule: str
    #: The trigger's own time of the fire (UTC), never the time it was sent.
    scheduled_for: datetime
    kind: FireKind
    #: The schedule's ``overlap:`` policy, so a worker needs no schedules.yaml to apply it.
    overlap: str = "allow"
    #: Times the fire was sent again because a worker running it died. Not Dramatiq's
    #: ``retries``: a lost worker never uses up one of the schedule's retries.
    resends: int = 0
    #: An ad-hoc run's idempotency key (services/adhoc.py), for readable logs and alerts.
    key: str | None = None

    def to_option(self) -> dict[str, Any]:
        option: dict[str, Any] = {
            "schedule": self.schedule,
            "scheduled_for": iso(self.scheduled_for),
            "kind": FireKind(self.kind).value,
            "overlap": self.overlap,
        }
        if self.resends:
            option["resends"] = self.resends
        if self.key is not None:
            option["key"] = self.key
        return option

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FireOptions | None:
        """The fire a message's options describe; None for a message cronwork did not send."""
        raw = options.get(FIRE_OPTION)
        if not isinstance(raw, dict):
            return None
        return cls(
            schedule=str(raw["schedule"]),
            scheduled_for=datetime.fromisoformat(str(raw["scheduled_for"]).replace("Z", "+00:00")),
            kind=FireKind(raw.get("kind", FireKind.SCHEDULED)),
            overlap=str(raw.get("overlap", "allow")),
            resends=int(raw.get("resends", 0)),
            key=None if raw.get("key") is None else str(raw["key"]),
        )


def attempt_number(options: dict[str, Any], fire: FireOptions) -> int:
    """The attempt a delivery is: Dramatiq's retries so far plus the fire's re-sends.

    Two deliveries of the same attempt (a re-send, a broker redelivery) carry the same
    number, which is what makes the worker's claim on ``(message id, attempt)`` exclusive.
    """
    return int(options.get("retries", 0)) + fire.resends


def retry_options(options: dict[str, Any], attempts: int) -> dict[str, Any]:
    """The options of the retry that follows a fire's newest attempt (``attempts`` is its
    number plus one), as Retries would have sent it: to send that retry again."""
    fire = FireOptions.from_options(options)
    resends = fire.resends if fire is not None else 0
    return {**options, "retries": attempts - resends}


def with_resends(options: dict[str, Any], resends: int) -> dict[str, Any]:
    """A copy of a message's options with the fire's re-send count set."""
    out = dict(options)
    option = dict(out[FIRE_OPTION])
    if resends:
        option["resends"] = resends
    else:
        option.pop("resends", None)
    out[FIRE_OPTION] = option
    return out


def jitter_ms(spec: ScheduleSpec, scheduled_for: datetime) -> int:
    """A delay in [0, jitter) derived from the fire itself, so every replica agrees."""
    if spec.jitter is None:
        return 0
    digest = hashlib.sha256(f"{spec.name}|{iso(scheduled_for)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(ms(spec.jitter), 1)


def build_message(spec: ScheduleSpec, scheduled_for: datetime, kind: FireKind) -> dict[str, Any]:
    """Everything needed to send (and re-send) this fire's Dramatiq message."""
    fire = FireOptions(spec.name, scheduled_for, kind, spec.overlap)
    options: dict[str, Any] = {
        "max_retries": spec.max_retries,
        "min_backoff": ms(spec.min_backoff),
        "max_backoff": ms(spec.max_backoff),
        FIRE_OPTION: fire.to_option(),
    }
    if spec.time_limit is not None:
        options["time_limit"] = ms(spec.time_limit)
    if spec.lock is not None:
        options[LOCK_OPTION] = dict(spec.lock)
    return {
        "queue_name": spec.queue,
        "actor_name": spec.actor,
        "args": list(spec.args),
        "kwargs": dict(spec.kwargs),
        "options": options,
        "jitter_ms": jitter_ms(spec, scheduled_for),
    }
