"""What an actor can learn about the fire it is running for.

Actors receive exactly their schedule's ``args``/``kwargs``; the fire's identity
is here instead::

    from services.context import current_fire

    @dramatiq.actor
    def send_weekly_digest():
        fire = current_fire()
        week = fire.scheduled_for if fire else datetime.now(UTC)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from services.vocabulary import FireKind


@dataclass(frozen=True)
class FireInfo:
    schedule: str
    #: The trigger's own time for this fire (UTC), not the time the actor started.
    scheduled_for: datetime
    kind: FireKind
    fire_id: int | None
    message_id: str
    attempt: int  # 0-based


_local = threading.local()


def current_fire() -> FireInfo | None:
    """The fire this worker thread is running, or None outside a cronwork message."""
    return getattr(_local, "fire", None)


def _set_current(fire: FireInfo | None) -> None:
    _local.fire = fire


def mark_skipped(reason: str) -> None:
    """Record this attempt as ``skipped`` with ``reason`` when its body returns.

    For code that decides not to do the work (a busy lock): the attempt is then not
    counted as a success, and the reason shows in history.
    """
    _local.skip_reason = reason


def take_skip_reason() -> str | None:
    """The reason given to :func:`mark_skipped` in this thread, once (tracking reads it)."""
    reason = getattr(_local, "skip_reason", None)
    _local.skip_reason = None
    return reason
