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


@dataclass(frozen=True)
class FireInfo:
    schedule: str
    #: The trigger's own time for this fire (UTC), not the time the actor started.
    scheduled_for: datetime
    kind: str  # scheduled | catchup | manual
    fire_id: int | None
    message_id: str
    attempt: int  # 0-based


_local = threading.local()


def current_fire() -> FireInfo | None:
    """The fire this worker thread is running, or None outside a cronwork message."""
    return getattr(_local, "fire", None)


def _set_current(fire: FireInfo | None) -> None:
    _local.fire = fire
