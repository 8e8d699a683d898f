"""Load and validate ``schedules.yaml`` into :class:`~services.schedules.spec.ScheduleSpec` objects.

The file is refused whole (docs/design.md, bad input): every problem in it is collected,
each located at the most precise line we can name, and reported together as one
:class:`~services.errors.ConfigError`. Nothing of an invalid file is ever returned.

We walk PyYAML's node tree ourselves instead of calling ``yaml.safe_load`` because
the node tree keeps line numbers and shows duplicate keys, which ``safe_load``
silently collapses to the last one.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from services.errors import ConfigError, CronError, DurationError, Problem
from services.schedules.durations import format_duration, parse_duration
from services.schedules.spec import (
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MIN_BACKOFF,
    AlertPolicy,
    ScheduleSpec,
    TriggerKind,
)

if TYPE_CHECKING:
    import dramatiq

DEFAULT_FILE = "schedules.yaml"

# --- The allowed keys, in one place. To add a key: give it a parser in _PARSERS,
# --- list it below, and (if ScheduleSpec has no field of that name) map it in _build_spec.

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
)
#: Everything a schedule may contain.
SCHEDULE_KEYS: tuple[str, ...] = (
    "actor",
    *TRIGGER_KEYS,
    "args",
    "kwargs",
    "start",
    "end",
    *DEFAULTABLE_KEYS,
)
OVERLAP_CHOICES: tuple[str, ...] = ("allow", "skip")
CATCHUP_CHOICES: tuple[str, ...] = ("all", "latest", "none")
ON_LOST_CHOICES: tuple[str, ...] = ("resend", "abandon")
#: Keys of a schedule's ``alerts:`` mapping (services.schedules.spec.AlertPolicy).
ALERT_KEYS: tuple[str, ...] = (
    "slack",
    "webhook_env",
    "sentry",
    "checkin_margin",
    "failure_threshold",
)
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Names become Sentry monitor slugs and CLI arguments, so keep them shell- and URL-safe.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAME_RULE = "use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
#: Dramatiq's own queue-name rule (dramatiq.actor._queue_name_re): refuse here what it
#: would refuse later, at send time, far from the file.
_QUEUE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_TIME_EXAMPLE = "2026-12-01T09:00:00+01:00"


@dataclass(frozen=True)
class ScheduleFile:
    """A validated schedules file."""

    path: str
    imports: tuple[str, ...]
    import_lines: dict[str, int]
    schedules: dict[str, ScheduleSpec]
    #: schedule name -> line of its ``actor:`` value, so check_actors can point at it.
    actor_lines: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as strings.

    We parse times ourselves (datetime.fromisoformat) so a naive time can be put in
    the schedule's time zone; PyYAML would turn it into a naive datetime, or into
    UTC if it had an offset, losing what the user wrote.
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _compose(text: str, file: str) -> Node | None:
    """The node tree of ``text``; a YAML syntax error becomes a ConfigError."""
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([Problem(file, line, None, _yaml_message(exc))]) from None
    except yaml.YAMLError as exc:
        # ReaderError (e.g. a NUL byte) has a character position but no mark.
        position = getattr(exc, "position", 0) or 0
        line = text.count("\n", 0, position) + 1
        reason = getattr(exc, "reason", None) or "unreadable"
        raise ConfigError([Problem(file, line, None, f"invalid YAML: {reason}")]) from None


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (exc.context, exc.problem) if p]
    message = "invalid YAML: " + ", ".join(parts) if parts else "invalid YAML"
    if "alias" in message:
        # `cron: */5 * * * *` unquoted reads as a YAML alias; the raw error is baffling.
        message += " (a value starting with '*' must be quoted, e.g. cron: \"*/5 * * * *\")"
    return message


class _Invalid(Exception):
    """A value is wrong; raised by parsers, turned into a Problem by the caller."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: A more precise node than the value's own (e.g. one element of args).
        self.node = node


_CONSTRUCTOR = SafeConstructor()


def _scalar(node: Node) -> Any:
    """The Python value of a scalar node (str, int, float, bool or None)."""
    if not isinstance(node, ScalarNode):
        raise _Invalid("expected a single value, not a list or mapping")
    try:
        return _CONSTRUCTOR.construct_object(node)
    except ConstructorError:
        raise _Invalid(f"unsupported YAML tag '{node.tag}'", node) from None


def _show(node: Node) -> str:
    """How the user wrote a value, for messages (never a Python repr)."""
    if isinstance(node, ScalarNode):
        return str(node.value) if node.value != "" else "nothing"
    return "a list" if isinstance(node, SequenceNode) else "a mapping"


def _about(key: str, message: str) -> str:
    """Name the key in a message unless it already does (``every: duration '0s' ...``)."""
    return message if key in message else f"{key}: {message}"


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _entries(
    node: MappingNode, report: Callable[[Node, str], None]
) -> list[tuple[str, Node, Node]]:
    """(key, key_node, value_node) of a mapping, refusing duplicate and non-string keys.

    Keys are taken as written (node.value), so `on:` or `2026:` are names, not a bool
    or an int. A duplicate is reported and dropped, so its value is not checked twice.
    """
    first_line: dict[str, int] = {}
    out: list[tuple[str, Node, Node]] = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            report(key_node, "keys must be plain names, not a list or mapping")
            continue
        key = str(key_node.value)
        if key == "<<":
            report(key_node, "YAML merge keys ('<<') are not supported; use 'defaults'")
            continue
        if key in first_line:
            report(key_node, f"duplicate key '{key}' (first at line {first_line[key]})")
            continue
        first_line[key] = _line(key_node)
        out.append((key, key_node, value_node))
    return out


# ------------------------------------------------------------------ value parsers
# Each takes the value's node and returns the Python value, or raises _Invalid /
# DurationError / CronError with a message that says what is wrong.


def _parse_string(node: Node, what: str) -> str:
    value = _scalar(node)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"{what} must be a non-empty string, got {_show(node)}")
    return value


def _parse_actor(node: Node) -> str:
    name = _parse_string(node, "actor")
    if ":" in name or "/" in name:
        raise _Invalid(
            f"actor '{name}' looks like an import path; name the Dramatiq actor, "
            "not an import path (e.g. 'send_weekly_digest'), and list its module under 'imports'"
        )
    return name


def _parse_cron(node: Node) -> str:
    expr = _parse_string(node, "cron")
    # Imported here so this module does not depend on the cron parser at import time.
    from services.schedules.cron import parse_crontab

    try:
        parse_crontab(expr)
    except CronError as exc:
        # Show the expression once: parse_crontab's message may already quote it.
        message = str(exc)
        raise _Invalid(message if expr in message else f"bad cron '{expr}': {message}") from None
    return expr


def _parse_duration(node: Node) -> timedelta:
    value = _scalar(node)
    if isinstance(value, bool) or not isinstance(value, str):
        # parse_duration would show a Python repr; speak YAML instead.
        raise _Invalid(f"duration must be a string like '30s', '15m' or '1h', got {_show(node)}")
    return parse_duration(value)


def _parse_time(node: Node) -> datetime:
    """An ISO 8601 time; naive ones are made aware later, in the schedule's zone."""
    value = _scalar(node)
    bad = _Invalid(f"bad time '{_show(node)}': expected ISO 8601 like {_TIME_EXAMPLE}")
    if not isinstance(value, str):
        raise bad
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise bad from None


@cache
def _zone_names() -> frozenset[str]:
    # Scans the tz database, so only done when a name is wrong, to suggest the right one.
    return frozenset(available_timezones())


def _parse_timezone(node: Node) -> str:
    value = _scalar(node)
    if not isinstance(value, str):
        raise _Invalid(f"timezone must be an IANA name like 'Europe/Berlin', got {_show(node)}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Invalid(f"unknown time zone '{value}'{_hint(value, _zone_names())}") from None
    return value


def _parse_queue(node: Node) -> str:
    value = _scalar(node)
    if not isinstance(value, str):
        raise _Invalid(f"queue must be a name like 'reports', got {_show(node)}")
    if not _QUEUE_RE.fullmatch(value):
        raise _Invalid(
            f"bad queue name '{value}': use letters, digits, '_', '.' or '-', "
            "starting with a letter or '_'"
        )
    return value


def _parse_max_retries(node: Node) -> int:
    value = _scalar(node)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"max_retries must be a whole number, got {_show(node)}")
    if value < 0:
        raise _Invalid(f"max_retries must be 0 or more, got {value}")
    return value


def _parse_bool(key: str) -> Callable[[Node], bool]:
    def parse(node: Node) -> bool:
        value = _scalar(node)
        if not isinstance(value, bool):
            raise _Invalid(f"{key} must be true or false, got {_show(node)}")
        return value

    return parse


def _parse_choice(key: str, choices: tuple[str, ...]) -> Callable[[Node], str]:
    def parse(node: Node) -> str:
        value = _scalar(node)
        if value not in choices:
            shown = _show(node)
            raise _Invalid(
                f"{key} must be one of {', '.join(choices)}, got '{shown}'{_hint(shown, choices)}"
            )
        return str(value)

    return parse


def _parse_args(node: Node) -> tuple[Any, ...]:
    if not isinstance(node, SequenceNode):
        raise _Invalid(f'args must be a list, e.g. [1, "x"], got {_show(node)}')
    return tuple(_plain(item) for item in node.value)


def _parse_kwargs(node: Node) -> dict[str, Any]:
    if not isinstance(node, MappingNode):
        raise _Invalid(f"kwargs must be a mapping, e.g. {{limit: 10}}, got {_show(node)}")
    return _plain_mapping(node, "kwargs")


def _plain(node: Node) -> Any:
    """A JSON-safe value: it travels in a Dramatiq message, so nothing else will do."""
    if isinstance(node, SequenceNode):
        return [_plain(item) for item in node.value]
    if isinstance(node, MappingNode):
        return _plain_mapping(node, "mapping")
    value = _scalar(node)
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid(f"'{node.value}' is not a plain JSON number", node)
    if value is not None and not isinstance(value, str | int | float | bool):
        raise _Invalid(f"'{node.value}' is not plain JSON", node)
    return value


def _plain_mapping(node: MappingNode, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node) if isinstance(key_node, ScalarNode) else None
        if not isinstance(key, str):
            raise _Invalid(f"{what} keys must be strings, got {_show(key_node)}", key_node)
        if key in first_line:
            raise _Invalid(f"duplicate key '{key}' (first at line {first_line[key]})", key_node)
        first_line[key] = _line(key_node)
        out[key] = _plain(value_node)
    return out


def _parse_alerts(node: Node) -> AlertPolicy:
    """``alerts: {slack: false}`` or ``{webhook_env: TEAM_HOOK, checkin_margin: 5m}``."""
    if not isinstance(node, MappingNode):
        raise _Invalid(
            f"alerts must be a mapping, e.g. {{slack: false}} or {{webhook_env: NAME}}, "
            f"got {_show(node)}"
        )
    values: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value) if isinstance(key_node, ScalarNode) else ""
        if key not in ALERT_KEYS:
            raise _Invalid(f"alerts: unknown key '{key}'{_hint(key, ALERT_KEYS)}", key_node)
        if key in seen:
            raise _Invalid(f"alerts: duplicate key '{key}' (first at line {seen[key]})", key_node)
        seen[key] = _line(key_node)
        try:
            if key in ("slack", "sentry"):
                values[key] = _parse_bool(f"alerts: {key}")(value_node)
            elif key == "webhook_env":
                name = _scalar(value_node)
                if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
                    raise _Invalid(
                        # The value is not echoed: it may be the webhook URL itself.
                        "alerts: webhook_env must name an environment variable "
                        "(like TEAM_SLACK_WEBHOOK); never put the webhook URL in this file",
                        value_node,
                    )
                values[key] = name
            elif key == "checkin_margin":
                values[key] = _parse_duration(value_node)
            else:
                n = _scalar(value_node)
                if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                    raise _Invalid(
                        f"alerts: failure_threshold must be a whole number of 1 or more, "
                        f"got {_show(value_node)}",
                        value_node,
                    )
                values[key] = n
        except (DurationError, _Invalid) as exc:
            message = exc.message if isinstance(exc, _Invalid) else str(exc)
            raise _Invalid(_about(f"alerts: {key}", message), value_node) from None
    return AlertPolicy(**values)


#: key -> parser of its value. Keys in SCHEDULE_KEYS / DEFAULTABLE_KEYS must be here.
_PARSERS: dict[str, Callable[[Node], Any]] = {
    "actor": _parse_actor,
    "cron": _parse_cron,
    "every": _parse_duration,
    "at": _parse_time,
    "start": _parse_time,
    "end": _parse_time,
    "timezone": _parse_timezone,
    "args": _parse_args,
    "kwargs": _parse_kwargs,
    "queue": _parse_queue,
    "max_retries": _parse_max_retries,
    "min_backoff": _parse_duration,
    "max_backoff": _parse_duration,
    "time_limit": _parse_duration,
    "max_runtime": _parse_duration,
    "overlap": _parse_choice("overlap", OVERLAP_CHOICES),
    "catchup": _parse_choice("catchup", CATCHUP_CHOICES),
    "catchup_window": _parse_duration,
    "jitter": _parse_duration,
    "enabled": _parse_bool("enabled"),
    "grace": _parse_duration,
    "on_lost": _parse_choice("on_lost", ON_LOST_CHOICES),
    "alerts": _parse_alerts,
}


# --------------------------------------------------------------------- the walker


#: Marks a setting whose value was refused (already reported).
_INVALID: Any = object()


@dataclass
class _Setting:
    value: Any
    line: int


class _Parser:
    """Walks one file's node tree, collecting problems instead of stopping at the first."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, line: int, schedule: str | None, message: str) -> None:
        self.problems.append(Problem(self.file, line, schedule, message))

    def reporter(self, schedule: str | None, prefix: str = "") -> Callable[[Node, str], None]:
        return lambda node, message: self.problem(_line(node), schedule, prefix + message)

    def settings(
        self,
        node: MappingNode,
        allowed: tuple[str, ...],
        schedule: str | None,
        prefix: str = "",
        not_here: str = "",
    ) -> dict[str, _Setting]:
        """Parse each key of a defaults/schedule mapping, reporting what is wrong.

        A key whose value was refused is kept as ``_INVALID`` so later checks know it
        was there (e.g. a bad ``cron`` still counts as the schedule's trigger).
        """
        report = self.reporter(schedule, prefix)
        out: dict[str, _Setting] = {}
        for key, key_node, value_node in _entries(node, report):
            if key not in allowed:
                if not_here and key in _PARSERS:
                    report(key_node, f"'{key}' {not_here}")
                else:
                    report(key_node, f"unknown key '{key}'{_hint(key, allowed)}")
                continue
            value = _INVALID
            try:
                value = _PARSERS[key](value_node)
            except _Invalid as exc:
                report(exc.node or value_node, _about(key, exc.message))
            except (DurationError, CronError) as exc:
                report(value_node, _about(key, str(exc)))
            out[key] = _Setting(value, _line(value_node))
        return out

    # -- top level

    def parse(self, root: Node | None) -> ScheduleFile | None:
        if root is None:
            # Refusing an empty file guards against a truncated or wrong file silently
            # meaning "run nothing"; `schedules: {}` says that on purpose.
            self.problem(1, None, "file is empty: expected a mapping with 'schedules'")
            return None
        if not isinstance(root, MappingNode):
            self.problem(
                _line(root), None, "the top level must be a mapping with 'imports' and 'schedules'"
            )
            return None
        parts: dict[str, tuple[Node, Node]] = {}
        report = self.reporter(None)
        for key, key_node, value_node in _entries(root, report):
            if key in TOP_LEVEL_KEYS:
                parts[key] = (key_node, value_node)
            else:
                report(key_node, f"unknown top-level key '{key}'{_hint(key, TOP_LEVEL_KEYS)}")
        imports, import_lines = self.imports(parts.get("imports"))
        defaults = self.defaults(parts.get("defaults"))
        if "schedules" not in parts:
            self.problem(1, None, "missing 'schedules' (write 'schedules: {}' to run nothing)")
            return None
        schedules, actor_lines = self.schedules(parts["schedules"][1], defaults)
        return ScheduleFile(self.file, imports, import_lines, schedules, actor_lines)

    def imports(self, part: tuple[Node, Node] | None) -> tuple[tuple[str, ...], dict[str, int]]:
        lines: dict[str, int] = {}
        if part is None or _is_null(part[1]):
            return (), lines
        node = part[1]
        if not isinstance(node, SequenceNode):
            self.problem(
                _line(node), None, "imports must be a list of module names, e.g. [actors.digest]"
            )
            return (), lines
        for item in node.value:
            value = _scalar(item) if isinstance(item, ScalarNode) else None
            if not isinstance(value, str) or not _MODULE_RE.fullmatch(value):
                self.problem(
                    _line(item),
                    None,
                    f"imports: '{_show(item)}' is not a module name (dotted, like actors.digest)",
                )
            elif value in lines:
                self.problem(
                    _line(item),
                    None,
                    f"imports: '{value}' is listed twice (first at line {lines[value]})",
                )
            else:
                lines[value] = _line(item)
        return tuple(lines), lines

    def defaults(self, part: tuple[Node, Node] | None) -> dict[str, _Setting]:
        if part is None or _is_null(part[1]):
            return {}
        node = part[1]
        if not isinstance(node, MappingNode):
            self.problem(_line(node), None, "defaults: must be a mapping of settings")
            return {}
        settings = self.settings(
            node,
            DEFAULTABLE_KEYS,
            None,
            prefix="defaults: ",
            not_here="cannot have a default; set it in each schedule",
        )
        self.check_backoff(settings, {}, None, "defaults: ")
        # A bad default was reported once, here; schedules fall back to the built-in
        # value so they do not each repeat the same problem.
        return {k: s for k, s in settings.items() if s.value is not _INVALID}

    def schedules(
        self, node: Node, defaults: dict[str, _Setting]
    ) -> tuple[dict[str, ScheduleSpec], dict[str, int]]:
        specs: dict[str, ScheduleSpec] = {}
        actor_lines: dict[str, int] = {}
        if _is_null(node):
            return specs, actor_lines
        if not isinstance(node, MappingNode):
            self.problem(_line(node), None, "schedules must be a mapping of name -> settings")
            return specs, actor_lines
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(_line(key_node), None, "schedule names must be plain strings")
                continue
            name = str(key_node.value)
            line = _line(key_node)
            if name in first_line:
                self.problem(
                    line,
                    None,
                    f"duplicate schedule name '{name}' (first defined at line {first_line[name]})",
                )
                continue
            first_line[name] = line
            if not _NAME_RE.fullmatch(name):
                self.problem(line, name, f"bad schedule name: {_NAME_RULE}")
            spec = self.schedule(name, line, value_node, defaults)
            if spec is not None:
                specs[name], actor_lines[name] = spec
        return specs, actor_lines

    # -- one schedule

    def schedule(
        self, name: str, line: int, node: Node, defaults: dict[str, _Setting]
    ) -> tuple[ScheduleSpec, int] | None:
        if not isinstance(node, MappingNode):
            self.problem(
                _line(node) if not _is_null(node) else line,
                name,
                "must be a mapping of settings (actor, and one of cron, every or at)",
            )
            return None
        before = len(self.problems)
        own = self.settings(node, SCHEDULE_KEYS, name)
        self.check_required(name, line, own)
        self.check_backoff(own, defaults, name, "")
        merged = {**defaults, **own}
        _localize_times(merged)
        self.check_window(name, merged)
        if len(self.problems) > before or any(s.value is _INVALID for s in own.values()):
            return None
        return _build_spec(self.file, name, line, merged), own["actor"].line

    def check_required(self, name: str, line: int, own: dict[str, _Setting]) -> None:
        if "actor" not in own:
            self.problem(line, name, "needs an 'actor' (the name of a Dramatiq actor)")
        triggers = [k for k in TRIGGER_KEYS if k in own]
        if not triggers:
            self.problem(line, name, "needs one of cron, every or at")
        elif len(triggers) > 1:
            quoted = [f"'{k}'" for k in triggers]
            listed = ", ".join(quoted[:-1]) + " and " + quoted[-1]
            has = "has both" if len(quoted) == 2 else "has"
            # Point at the trigger that comes last in the file: the one most likely added.
            last = max(own[k].line for k in triggers)
            self.problem(last, name, f"{has} {listed}; use exactly one")

    def check_window(self, name: str, merged: dict[str, _Setting]) -> None:
        """start/end only with cron/every, and end after start (both already zoned)."""
        if "at" in merged:
            for key in ("start", "end"):
                if key in merged:
                    self.problem(
                        merged[key].line,
                        name,
                        f"'{key}' only applies to cron and every schedules; "
                        "an 'at' schedule fires once",
                    )
            return
        start, end = merged.get("start"), merged.get("end")
        if start is None or end is None or _INVALID in (start.value, end.value):
            return
        if start.value.tzinfo is None or end.value.tzinfo is None:
            return  # the time zone was bad (reported); naive and aware do not compare
        if end.value <= start.value:
            self.problem(
                end.line,
                name,
                f"end ({end.value.isoformat()}) must be after start ({start.value.isoformat()})",
            )

    def check_backoff(
        self,
        own: dict[str, _Setting],
        defaults: dict[str, _Setting],
        schedule: str | None,
        prefix: str,
    ) -> None:
        """min_backoff <= max_backoff, reported where one of the two is set."""
        low = own.get("min_backoff") or defaults.get("min_backoff")
        high = own.get("max_backoff") or defaults.get("max_backoff")
        if "min_backoff" not in own and "max_backoff" not in own:
            return  # nothing set here; defaults were checked on their own
        low_value = low.value if low else DEFAULT_MIN_BACKOFF
        high_value = high.value if high else DEFAULT_MAX_BACKOFF
        if low_value is _INVALID or high_value is _INVALID or low_value <= high_value:
            return
        line = own["max_backoff"].line if "max_backoff" in own else own["min_backoff"].line
        low_text = format_duration(low_value) + ("" if low else ", the default")
        high_text = format_duration(high_value) + ("" if high else ", the default")
        self.problem(
            line,
            schedule,
            f"{prefix}min_backoff ({low_text}) must not be more than max_backoff ({high_text})",
        )


def _localize_times(merged: dict[str, _Setting]) -> None:
    """Give naive at/start/end the schedule's time zone (its own, else the default's)."""
    zone_setting = merged.get("timezone")
    zone_name = zone_setting.value if zone_setting else "UTC"
    if zone_name is _INVALID:
        return  # already reported; the file is refused anyway
    zone = ZoneInfo(zone_name)
    for key in ("at", "start", "end"):
        setting = merged.get(key)
        if setting is not None and setting.value is not _INVALID and setting.value.tzinfo is None:
            merged[key] = _Setting(setting.value.replace(tzinfo=zone), setting.line)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _build_spec(file: str, name: str, line: int, merged: dict[str, _Setting]) -> ScheduleSpec:
    values = {key: setting.value for key, setting in merged.items()}
    trigger = cast("TriggerKind", next(k for k in TRIGGER_KEYS if k in values))
    return ScheduleSpec(name=name, trigger=trigger, file=file, line=line, **values)


# --------------------------------------------------------------------- public API


def parse_schedules(text: str, file: str = DEFAULT_FILE) -> ScheduleFile:
    """Validate the text of a schedules file; raise ConfigError listing every problem."""
    root = _compose(text, file)
    parser = _Parser(file)
    result = parser.parse(root)
    if parser.problems or result is None:
        raise ConfigError(sorted(parser.problems, key=lambda p: p.line))
    return result


def load_schedules(path: str | os.PathLike[str]) -> ScheduleFile:
    """Read and validate a schedules file; raise ConfigError on any problem."""
    file = os.fspath(path)
    try:
        with open(file, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError([Problem(file, 1, None, "file not found")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(file, 1, None, "cannot read file: not valid UTF-8")]) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([Problem(file, 1, None, f"cannot read file: {reason}")]) from None
    return parse_schedules(text, file)


def check_actors(schedule_file: ScheduleFile, broker: dramatiq.Broker) -> list[Problem]:
    """Import the file's modules and check every schedule's actor is declared on ``broker``.

    The caller must have set ``broker`` as the global broker (dramatiq.set_broker)
    first, so ``@dramatiq.actor`` in the imported modules registers on it.
    """
    from dramatiq.errors import ActorNotFound

    file = schedule_file.path
    problems: list[Problem] = []
    for module in schedule_file.imports:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any failure in user code is a problem to report, not a crash
            line = schedule_file.import_lines.get(module, 1)
            problems.append(
                Problem(file, line, None, f"cannot import '{module}': {type(exc).__name__}: {exc}")
            )
    imported = ", ".join(schedule_file.imports) or "none"
    for name, spec in schedule_file.schedules.items():
        try:
            broker.get_actor(spec.actor)
        except ActorNotFound:
            hint = _hint(spec.actor, broker.get_declared_actors())
            line = schedule_file.actor_lines.get(name, spec.line)
            problems.append(
                Problem(
                    file,
                    line,
                    name,
                    f"actor '{spec.actor}' is not defined (imports: {imported}){hint}",
                )
            )
    return sorted(problems, key=lambda p: p.line)
