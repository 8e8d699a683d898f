"""What an actor can learn about the fire it is running for.

Actors receive exactly their schedule's ``args``/``kwargs``; the fire's identity
is here instead::

    from services.context import current_fire

    @dramatiq.actor
    def send_weekly_digest():
        fire = current_fire()
        week = fire.scheduled_for if fire else datetime.now(UTC)

An actor that decides not to do its work (a lock held elsewhere, nothing to do) calls
``mark_skipped(reason)`` and returns: the attempt is then recorded as ``skipped`` with
that reason instead of ``succeeded``.
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


def mark_skipped(reason: str) -> bool:
    """Have the running attempt recorded as skipped, with ``reason``, once the actor returns.

    Returns False, and does nothing, outside a cronwork fire. The first reason given
    in an attempt is kept: it is the one that decided.
    """
    if current_fire() is None:
        return False
    if getattr(_local, "skip_reason", None) is None:
        _local.skip_reason = reason
    return True


def take_skip_reason() -> str | None:
    """The reason given to :func:`mark_skipped` in this thread's attempt, then forgotten.

    For the tracking middleware, after the actor returned; it may be called before or
    after the fire is cleared with ``_set_current(None)``.
    """
    reason: str | None = getattr(_local, "skip_reason", None)
    _local.skip_reason = None
    return reason


def _set_current(fire: FireInfo | None) -> None:
    if fire is not None:
        # A new attempt never inherits the skip of the previous one on this thread.
        _local.skip_reason = None
    _local.fire = fire
