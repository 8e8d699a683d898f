"""A tiny job every 15 seconds, so a new install shows fires at once."""

from __future__ import annotations

import dramatiq

from services.context import current_fire


@dramatiq.actor
def heartbeat() -> dict[str, object]:
    fire = current_fire()
    return {"ok": True, "scheduled_for": fire.scheduled_for.isoformat() if fire else None}
