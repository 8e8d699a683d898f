"""What each key of schedules.yaml accepts: one parser per key, and the ranges they hold.

A parser takes the YAML node of a value and returns the Python value, or raises
:class:`~services.schedules.nodes.Invalid` with a message that says what is wrong (the
walker in ``services.schedules.loader`` adds the file, the line and the schedule).

To add a key: give it a parser in ``PARSERS``, list it in the key tuples below, and (if
ScheduleSpec has no field of that name) map it in the loader's ``_build_spec``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from yaml.nodes import Node, ScalarNode

from services.errors import CronError, DurationError, LockOptionsError
from services.locks.options import LockOptions
from services.redact import printable
from services.schedules.durations import format_duration, parse_duration
from services.schedules.limits import EARLIEST_TIME, LATEST_TIME, MAX_DURATION, MAX_KEEP_COUNT
from services.schedules.nodes import (
    Invalid,
    about,
    hint,
    mapping,
    scalar,
    show,
    show_text,
)
from services.schedules.spec import AlertPolicy, KeepPolicy
from services.schedules.yaml_reader import line_of

#: Keys allowed at the top level of the file.
TOP_LEVEL_KEYS: tuple[str, ...] = ("imports", "defaults", "schedules")
#: The trigger keys; a schedule has exactly one of them.
TRIGGER_KEYS: tuple[str, ...] = ("cron", "every", "at")
#: Execution settings that ``defaults:`` may set for every schedule.
DEFAULTABLE_KEYS: tuple[str, ...] = (
    "timezone",
    "queue",
    "max_retries",
    "min_backoff",
    "max_backoff",
    "time_limit",
    "max_runtime",
    "overlap",
    "catchup",
    "catchup_window",
    "jitter",
    "enabled",
    "grace",
    "on_lost",
    "alerts",
    "keep",
)
#: Everything a schedule may contain.
SCHEDULE_KEYS: tuple[str, ...] = (
    "actor",
    *TRIGGER_KEYS,
    "args",
    "kwargs",
    "start",
    "end",
    "lock",
    *DEFAULTABLE_KEYS,
)
OVERLAP_CHOICES: tuple[str, ...] = ("allow", "skip")
CATCHUP_CHOICES: tuple[str, ...] = ("all", "latest", "none")
ON_LOST_CHOICES: tuple[str, ...] = ("resend", "abandon")
#: Keys of a schedule's ``lock:`` mapping (services/locks/options.py).
LOCK_KEYS: tuple[str, ...] = ("key", "ttl", "on_busy", "timeout", "extend")
#: Keys of a schedule's ``alerts:`` mapping (services.schedules.spec.AlertPolicy).
ALERT_KEYS: tuple[str, ...] = (
    "slack",
    "webhook_env",
    "sentry",
    "checkin_margin",
    "failure_threshold",
)

#: Keys of a schedule's ``keep:`` mapping (services.schedules.spec.KeepPolicy).
KEEP_KEYS: tuple[str, ...] = ("succeeded", "failed", "max_age")

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Dramatiq's own queue-name rule (dramatiq.actor._queue_name_re): refuse here what it
#: would refuse later, at send time, far from the file.
_QUEUE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")
#: An IANA zone name; anything else (a path, "..") is not looked up at all.
_ZONE_RE = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_TIME_EXAMPLE = "2026-12-01T09:00:00+01:00"


# ------------------------------------------------------------------ value parsers


def parse_string(node: Node, what: str) -> str:
    value = scalar(node)
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{what} must be a non-empty string, got {show(node)}")
    return value


def parse_actor(node: Node) -> str:
    name = parse_string(node, "actor")
    if ":" in name or "/" in name:
        raise Invalid(
            f"actor '{show_text(name)}' looks like an import path; name the Dramatiq actor, "
            "not an import path (e.g. 'send_weekly_digest'), and list its module under 'imports'"
        )
    return name


def parse_cron(node: Node) -> str:
    expr = parse_string(node, "cron")
    problem = _cron_problem(expr)
    if problem is not None:
        raise Invalid(problem)
    return expr


@lru_cache(maxsize=4096)
def _cron_problem(expr: str) -> str | None:
    """What is wrong with a cron expression; cached: large files repeat a few hundred."""
    # Imported here so this module does not depend on the cron parser at import time.
    from services.schedules.cron import parse_crontab

    try:
        parse_crontab(expr)
    except CronError as exc:
        # Show the expression once: parse_crontab's message may already quote it.
        message = printable(str(exc))
        return message if expr in message else f"bad cron '{show_text(expr)}': {message}"
    return None


def parse_duration_node(node: Node) -> timedelta:
    value = scalar(node)
    if isinstance(value, bool) or not isinstance(value, str):
        # parse_duration would show a Python repr; speak YAML instead.
        raise Invalid(f"duration must be a string like '30s', '15m' or '1h', got {show(node)}")
    delta = parse_duration(value)
    if delta > MAX_DURATION:
        raise Invalid(
            f"duration '{show_text(value)}' is longer than {format_duration(MAX_DURATION)} "
            "(about 10 years), the longest allowed"
        )
    return delta


def parse_time(node: Node) -> datetime:
    """An ISO 8601 time; naive ones are made aware later, in the schedule's zone."""
    value = scalar(node)
    bad = Invalid(f"bad time '{show(node)}': expected ISO 8601 like {_TIME_EXAMPLE}")
    if not isinstance(value, str):
        raise bad
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise bad from None


def time_range_problem(value: datetime) -> str | None:
    """Why an aware ``at``/``start``/``end`` is out of range, or None."""
    try:
        inside = EARLIEST_TIME <= value < LATEST_TIME
    except (OverflowError, ValueError):
        inside = False
    if inside:
        return None
    return (
        f"{value.isoformat()} is outside the years cronwork fires in: use a time from "
        f"{EARLIEST_TIME.year} up to {LATEST_TIME.year} (leave 'end' out to never end)"
    )


@cache
def _zone_names() -> frozenset[str]:
    # Scans the tz database, so only done when a name is wrong, to suggest the right one.
    return frozenset(available_timezones())


def parse_timezone(node: Node) -> str:
    value = scalar(node)
    if not isinstance(value, str):
        raise Invalid(f"timezone must be an IANA name like 'Europe/Berlin', got {show(node)}")
    try:
        # The name must look like one before it is used as a path into the tz database.
        ok = len(value) <= 64 and _ZONE_RE.fullmatch(value) is not None and bool(ZoneInfo(value))
    except Exception:  # ZoneInfoNotFoundError, and OSErrors such as 'Europe' (a folder)
        ok = False
    if not ok:
        raise Invalid(f"unknown time zone '{show_text(value)}'{hint(value, _zone_names())}")
    return value


def parse_queue(node: Node) -> str:
    value = scalar(node)
    if not isinstance(value, str):
        raise Invalid(f"queue must be a name like 'reports', got {show(node)}")
    if not _QUEUE_RE.fullmatch(value):
        raise Invalid(
            f"bad queue name '{show_text(value)}': use letters, digits, '_', '.' or '-', "
            "starting with a letter or '_'"
        )
    return value


def parse_max_retries(node: Node) -> int:
    value = scalar(node)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"max_retries must be a whole number, got {show(node)}")
    if value < 0:
        raise Invalid(f"max_retries must be 0 or more, got {value}")
    return value


def parse_bool(key: str) -> Callable[[Node], bool]:
    def parse(node: Node) -> bool:
        value = scalar(node)
        if not isinstance(value, bool):
            raise Invalid(f"{key} must be true or false, got {show(node)}")
        return value

    return parse


def parse_choice(key: str, choices: tuple[str, ...]) -> Callable[[Node], str]:
    def parse(node: Node) -> str:
        value = scalar(node)
        if value not in choices:
            shown = show(node)
            raise Invalid(
                f"{key} must be one of {', '.join(choices)}, got '{shown}'{hint(shown, choices)}"
            )
        return str(value)

    return parse


def parse_alerts(node: Node) -> AlertPolicy:
    """``alerts: {slack: false}`` or ``{webhook_env: TEAM_HOOK, checkin_margin: 5m}``."""
    example = "{slack: false} or {webhook_env: NAME}"
    return AlertPolicy(**_sub_settings(node, "alerts", example, _ALERT_PARSERS))


def parse_keep(node: Node) -> KeepPolicy:
    """``keep: {succeeded: 10, failed: 50, max_age: 30d}``, each key optional."""
    example = "{succeeded: 10, failed: 50, max_age: 30d}"
    return KeepPolicy(**_sub_settings(node, "keep", example, _KEEP_PARSERS))


def _parse_keep_count(node: Node) -> int:
    n = scalar(node)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_KEEP_COUNT:
        raise Invalid(
            f"must be a whole number from 0 to {MAX_KEEP_COUNT:,}, got {show(node)}", node
        )
    return n


def _sub_settings(
    node: Node, what: str, example: str, parsers: dict[str, Callable[[Node], Any]]
) -> dict[str, Any]:
    """Each key of the mapping ``node`` (alerts:, keep:) parsed by its parser."""
    if mapping(node) is None:
        raise Invalid(f"{what} must be a mapping, e.g. {example}, got {show(node)}")
    values: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value) if isinstance(key_node, ScalarNode) else ""
        if key not in parsers:
            raise Invalid(f"{what}: unknown key '{show_text(key)}'{hint(key, parsers)}", key_node)
        if key in seen:
            raise Invalid(f"{what}: duplicate key '{key}' (first at line {seen[key]})", key_node)
        seen[key] = line_of(key_node)
        try:
            values[key] = parsers[key](value_node)
        except (DurationError, Invalid) as exc:
            message = exc.message if isinstance(exc, Invalid) else str(exc)
            raise Invalid(about(f"{what}: {key}", message), value_node) from None
    return values


def _parse_webhook_env(node: Node) -> str:
    name = scalar(node)
    if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
        raise Invalid(
            # The value is not echoed: it may be the webhook URL itself.
            "alerts: webhook_env must name an environment variable "
            "(like TEAM_SLACK_WEBHOOK); never put the webhook URL in this file",
            node,
        )
    return name


def _parse_failure_threshold(node: Node) -> int:
    n = scalar(node)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise Invalid(
            f"alerts: failure_threshold must be a whole number of 1 or more, got {show(node)}",
            node,
        )
    return n


def parse_lock(node: Node) -> dict[str, Any]:
    """``lock: {key: "sync-{region}", ttl: 10m, on_busy: skip}``: the job runs under it.

    Validated as services/locks/options.py validates every lock, and kept as the plain
    mapping that travels in the fire's message (the worker takes the lock).
    """
    example = '{key: "sync-{region}", ttl: 10m}'
    values = _sub_settings(node, "lock", example, dict.fromkeys(LOCK_KEYS, scalar))
    try:
        options = LockOptions.from_mapping(values)
    except LockOptionsError as exc:
        raise Invalid(str(exc) if str(exc).startswith("lock") else f"lock: {exc}") from None
    return {
        "key": options.key,
        "ttl": options.ttl,
        "on_busy": options.on_busy.value,
        "timeout": options.timeout,
        "extend": options.extend,
    }


_ALERT_PARSERS: dict[str, Callable[[Node], Any]] = {
    "slack": parse_bool("alerts: slack"),
    "sentry": parse_bool("alerts: sentry"),
    "webhook_env": _parse_webhook_env,
    "checkin_margin": parse_duration_node,
    "failure_threshold": _parse_failure_threshold,
}

_KEEP_PARSERS: dict[str, Callable[[Node], Any]] = {
    "succeeded": _parse_keep_count,
    "failed": _parse_keep_count,
    "max_age": parse_duration_node,
}

#: key -> parser of its value. Keys in SCHEDULE_KEYS / DEFAULTABLE_KEYS must be here,
#: except args and kwargs, which the walker expands itself (plain_args, plain_kwargs).
PARSERS: dict[str, Callable[[Node], Any]] = {
    "actor": parse_actor,
    "cron": parse_cron,
    "every": parse_duration_node,
    "at": parse_time,
    "start": parse_time,
    "end": parse_time,
    "timezone": parse_timezone,
    "queue": parse_queue,
    "max_retries": parse_max_retries,
    "min_backoff": parse_duration_node,
    "max_backoff": parse_duration_node,
    "time_limit": parse_duration_node,
    "max_runtime": parse_duration_node,
    "overlap": parse_choice("overlap", OVERLAP_CHOICES),
    "catchup": parse_choice("catchup", CATCHUP_CHOICES),
    "catchup_window": parse_duration_node,
    "jitter": parse_duration_node,
    "enabled": parse_bool("enabled"),
    "grace": parse_duration_node,
    "on_lost": parse_choice("on_lost", ON_LOST_CHOICES),
    "alerts": parse_alerts,
    "lock": parse_lock,
    "keep": parse_keep,
}
