"""The validated form of one schedule from schedules.yaml.

``services.schedules.loader`` builds these from YAML; everything downstream (scheduler,
fence, worker, CLI) reads only these, never the YAML.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from services.schedules.durations import format_duration

TriggerKind = Literal["cron", "every", "at"]
Overlap = Literal["allow", "skip"]
Catchup = Literal["all", "latest", "none"]
OnLost = Literal["resend", "abandon"]

#: Default catch-up window for fires missed while no scheduler led.
DEFAULT_CATCHUP_WINDOW = timedelta(hours=1)
#: Added to max_runtime (or time_limit) for the overdue deadline when grace is unset.
DEFAULT_GRACE = timedelta(minutes=5)
#: Dramatiq's defaults, made explicit so they show in `cronwork status`.
DEFAULT_MAX_RETRIES = 3
DEFAULT_MIN_BACKOFF = timedelta(seconds=15)
DEFAULT_MAX_BACKOFF = timedelta(hours=1)


@dataclass(frozen=True)
class AlertPolicy:
    """The ``alerts:`` key of a schedule: where its alerts go (services/alerts)."""

    #: False mutes Slack for this schedule (incidents are still recorded).
    slack: bool = True
    #: Name of an environment variable holding this schedule's own webhook URL
    #: (the URL itself never goes into schedules.yaml).
    webhook_env: str | None = None
    #: False: no Sentry Crons monitor for this schedule.
    sentry: bool = True
    #: Sentry Crons check-in margin (how late the first check-in may be).
    checkin_margin: timedelta | None = None
    #: Consecutive failed check-ins before Sentry opens an issue.
    failure_threshold: int = 1


@dataclass(frozen=True)
class KeepPolicy:
    """The ``keep:`` key: how much of a schedule's history the leader keeps.

    None leaves a value to ``defaults: keep:``, then to the global default
    (``CRONWORK_RETENTION_DAYS`` for max_age; no count limit). services/store/retention.py
    applies it; the README (Retention) says which statuses each count covers.
    """

    #: Newest succeeded fires kept (and, counted apart, newest skipped ones).
    succeeded: int | None = None
    #: Newest fires that ended without doing their work (failed, timed_out, abandoned,
    #: missed) kept.
    failed: int | None = None
    #: Finished fires older than this are deleted, whatever the counts say.
    max_age: timedelta | None = None

    def over(self, base: KeepPolicy) -> KeepPolicy:
        """This policy, with what it leaves unset taken from ``base``."""
        return KeepPolicy(
            succeeded=base.succeeded if self.succeeded is None else self.succeeded,
            failed=base.failed if self.failed is None else self.failed,
            max_age=base.max_age if self.max_age is None else self.max_age,
        )


#: Slots: a scheduler holds every spec for its whole life, and 29 fields in a dict each
#: cost 1 KB a schedule; in slots, 0.3 KB (10 MB less resident at 10,000 schedules,
#: bench/scheduler_memory.py).
@dataclass(frozen=True, slots=True)
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
    #: Overdue when the last expected fire has no final outcome this long after its time;
    #: None: max_runtime (else time_limit) plus DEFAULT_GRACE.
    grace: timedelta | None = None
    #: What the watchdog does with a fire whose worker died mid-attempt.
    on_lost: OnLost = "resend"
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    #: ``lock:`` the job runs under (services/worker/job_locks.py): key, ttl, on_busy...
    lock: dict[str, Any] | None = None
    #: ``keep:``: how much history to keep (services/store/retention.py).
    keep: KeepPolicy = field(default_factory=KeepPolicy)
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

    def overdue_grace(self) -> timedelta:
        """How long after a fire's time its outcome may take before it is overdue."""
        if self.grace is not None:
            return self.grace
        return (self.max_runtime or self.time_limit or timedelta(0)) + DEFAULT_GRACE

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> ScheduleSpec:
        """``ScheduleSpec(**values)`` (the same object), without the generated ``__init__``.

        The loader builds one spec per schedule: the frozen dataclass's ``__init__``
        assigns 29 fields one ``object.__setattr__`` at a time, a third of ``check``'s
        time on a file of 150,000 schedules. This sets each slot through its descriptor,
        the defaults merged in one dict operation. It runs no ``__post_init__``
        (tests/unit/test_spec.py holds that there is none).
        """
        if not values.keys() <= _FIELDS:
            unknown = ", ".join(sorted(values.keys() - _FIELDS))
            raise TypeError(f"unexpected ScheduleSpec fields: {unknown}")
        if not values.keys() >= _REQUIRED:
            missing = ", ".join(
                name for name in _FIELDS_IN_ORDER if name in _REQUIRED - values.keys()
            )
            raise TypeError(f"missing ScheduleSpec fields: {missing}")
        spec = object.__new__(cls)
        state = _FIELD_DEFAULTS | values
        if "kwargs" not in values:
            state["kwargs"] = {}  # a fresh one each time, as its default_factory gives
        for name, value in state.items():
            _SLOTS[name](spec, value)
        return spec

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict of everything that defines the schedule (not file/line).

        Reads the fields directly rather than through ``asdict``, whose deep copies cost a
        new leader a second on 10,000 schedules; nothing here is mutated, only serialized.
        """
        out: dict[str, Any] = {}
        for key in _FIELDS_IN_ORDER:
            if key in ("file", "line"):
                continue
            value = getattr(self, key)
            if is_dataclass(value) and not isinstance(value, type):
                value = asdict(value)  # alerts, keep
            if isinstance(value, dict):
                value = {
                    k: v.total_seconds() if isinstance(v, timedelta) else v
                    for k, v in value.items()
                }
            out[key] = _json_scalar(value)
        return out

    def trigger_fingerprint(self) -> str:
        """Hash of what decides *when* it fires; a change means next_run_time is recomputed.

        The same digest as of those keys of ``to_json()``, read from the seven fields
        directly: ``asdict`` of the whole spec was most of a 10,000-schedule sync.
        """
        return _digest({k: _json_scalar(getattr(self, k)) for k in TRIGGER_KEYS})

    def fingerprint(self) -> str:
        """Hash of the whole schedule; a change means the stored copy is updated."""
        return fingerprint_of(self.to_json())


#: Each field's default (factories called once: AlertPolicy is frozen, so one is shared).
_FIELD_DEFAULTS: dict[str, Any] = {
    f.name: f.default if f.default_factory is MISSING else f.default_factory()
    for f in fields(ScheduleSpec)
    if f.default is not MISSING or f.default_factory is not MISSING
}
_FIELDS_IN_ORDER = tuple(f.name for f in fields(ScheduleSpec))
_FIELDS = frozenset(_FIELDS_IN_ORDER)
_REQUIRED = _FIELDS - _FIELD_DEFAULTS.keys()
#: Each field's slot setter (the member descriptor's ``__set__``, which a frozen
#: dataclass's ``__setattr__`` does not stand in front of).
_SLOTS: dict[str, Any] = {name: getattr(ScheduleSpec, name).__set__ for name in _FIELDS_IN_ORDER}


#: The fields that decide when a schedule fires (its trigger fingerprint).
TRIGGER_KEYS = ("trigger", "cron", "every", "at", "timezone", "start", "end")


def _json_scalar(value: Any) -> Any:
    """As ``to_json`` converts a field that is not a dict."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def fingerprint_of(data: dict[str, Any]) -> str:
    """``fingerprint()`` of the spec whose ``to_json()`` is ``data``."""
    return _digest(data)


def _digest(data: dict[str, Any]) -> str:
    raw = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]
