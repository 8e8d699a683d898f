"""The validated form of one schedule from schedules.yaml.

``services.config`` builds these from YAML; everything downstream (scheduler,
fence, worker, CLI) reads only these, never the YAML.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from services.durations import format_duration

TriggerKind = Literal["cron", "every", "at"]
Overlap = Literal["allow", "skip"]
Catchup = Literal["all", "latest", "none"]

#: Default catch-up window for fires missed while no scheduler led.
DEFAULT_CATCHUP_WINDOW = timedelta(hours=1)
#: Dramatiq's defaults, made explicit so they show in `cronwork status`.
DEFAULT_MAX_RETRIES = 3
DEFAULT_MIN_BACKOFF = timedelta(seconds=15)
DEFAULT_MAX_BACKOFF = timedelta(hours=1)


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    actor: str
    trigger: TriggerKind
    cron: str | None = None
    every: timedelta | None = None
    at: datetime | None = None
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    jitter: timedelta | None = None
    enabled: bool = True
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    max_retries: int = DEFAULT_MAX_RETRIES
    min_backoff: timedelta = DEFAULT_MIN_BACKOFF
    max_backoff: timedelta = DEFAULT_MAX_BACKOFF
    time_limit: timedelta | None = None
    max_runtime: timedelta | None = None
    overlap: Overlap = "allow"
    catchup: Catchup = "latest"
    catchup_window: timedelta = DEFAULT_CATCHUP_WINDOW
    #: Where the schedule was declared, for error messages; not part of its identity.
    file: str = field(default="schedules.yaml", compare=False)
    line: int = field(default=0, compare=False)

    def describe_trigger(self) -> str:
        """Human form of the trigger: ``cron 0 8 * * 1``, ``every 15s``, ``at 2026-…``."""
        if self.trigger == "cron":
            return f"cron {self.cron}"
        if self.trigger == "every":
            assert self.every is not None
            return f"every {format_duration(self.every)}"
        assert self.at is not None
        return f"at {self.at.isoformat()}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict of everything that defines the schedule (not file/line)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key in ("file", "line"):
                continue
            if isinstance(value, timedelta):
                value = value.total_seconds()
            elif isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    def trigger_fingerprint(self) -> str:
        """Hash of what decides *when* it fires; a change means next_run_time is recomputed."""
        keys = ("trigger", "cron", "every", "at", "timezone", "start", "end")
        data = {k: v for k, v in self.to_json().items() if k in keys}
        return _digest(data)

    def fingerprint(self) -> str:
        """Hash of the whole schedule; a change means the stored copy is updated."""
        return _digest(self.to_json())


def _digest(data: dict[str, Any]) -> str:
    raw = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]
