"""Load and validate ``schedules.yaml`` into :class:`~services.schedules.spec.ScheduleSpec` objects.

The file is refused whole (docs/design.md, bad input): every problem in it is collected,
each located at the most precise line we can name, and reported together as one
:class:`~services.errors.ConfigError`. Nothing of an invalid file is ever returned.

This module is the walker: it goes through the node tree that
``services.schedules.yaml_reader`` builds (bounded, with line numbers) and hands each
value to its parser in ``services.schedules.values``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import cast
from zoneinfo import ZoneInfo

from yaml.nodes import MappingNode, Node, ScalarNode

from services.errors import ConfigError
from services.schedules.durations import format_duration
from services.schedules.mappings import INVALID, MappingReader, Setting
from services.schedules.nodes import (
    MAP_TAG,
    STR_TAG,
    Invalid,
    hint,
    is_null,
    scalar,
    sequence,
    show,
    show_text,
)
from services.schedules.spec import (
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MIN_BACKOFF,
    ScheduleSpec,
    TriggerKind,
)
from services.schedules.values import (
    DEFAULTABLE_KEYS,
    SCHEDULE_KEYS,
    TOP_LEVEL_KEYS,
    TRIGGER_KEYS,
    time_range_problem,
)
from services.schedules.yaml_reader import compose, line_of, no_gc, read_file

DEFAULT_FILE = "schedules.yaml"

#: Names become Sentry monitor slugs and CLI arguments, so keep them shell- and URL-safe.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAME_RULE = "use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_SCHEDULE_KEYS = frozenset(SCHEDULE_KEYS)
_DEFAULTABLE_KEYS = frozenset(DEFAULTABLE_KEYS)


@dataclass(frozen=True)
class ScheduleFile:
    """A validated schedules file."""

    path: str
    imports: tuple[str, ...]
    import_lines: dict[str, int]
    schedules: dict[str, ScheduleSpec]
    #: schedule name -> line of its ``actor:`` value, so check_actors can point at it.
    actor_lines: dict[str, int] = field(default_factory=dict)


class _Parser(MappingReader):
    """Walks one file's node tree: its structure, and the checks across settings."""

    # -- top level

    def parse(self, root: Node | None) -> ScheduleFile | None:
        if root is None:
            # Refusing an empty file guards against a truncated or wrong file silently
            # meaning "run nothing"; `schedules: {}` says that on purpose.
            self.problem(1, None, "file is empty: expected a mapping with 'schedules'")
            return None
        top = self.as_mapping(
            root, None, "the top level must be a mapping with 'imports' and 'schedules'"
        )
        if top is None:
            return None
        parts: dict[str, tuple[Node, Node]] = {}
        report = self.reporter(None)
        for key, key_node, value_node in self.entries(top, report):
            if key in TOP_LEVEL_KEYS:
                parts[key] = (key_node, value_node)
            else:
                report(
                    key_node,
                    f"unknown top-level key '{show_text(key)}'{hint(key, TOP_LEVEL_KEYS)}",
                )
        imports, import_lines = self.imports(parts.get("imports"))
        defaults = self.defaults(parts.get("defaults"))
        if "schedules" not in parts:
            self.problem(1, None, "missing 'schedules' (write 'schedules: {}' to run nothing)")
            return None
        schedules, actor_lines = self.schedules(*parts["schedules"], defaults)
        return ScheduleFile(self.file, imports, import_lines, schedules, actor_lines)

    def imports(self, part: tuple[Node, Node] | None) -> tuple[tuple[str, ...], dict[str, int]]:
        lines: dict[str, int] = {}
        if part is None or is_null(part[1]):
            return (), lines
        node = part[1]
        try:
            found = sequence(node)
        except Invalid as exc:
            self.problem(line_of(node), None, f"imports: {exc.message}")
            return (), lines
        if found is None:
            self.problem(
                line_of(node), None, "imports must be a list of module names, e.g. [actors.digest]"
            )
            return (), lines
        for item in found.value:
            try:
                value = scalar(item) if isinstance(item, ScalarNode) else None
            except Invalid as exc:
                self.problem(line_of(item), None, f"imports: {exc.message}")
                continue
            if not isinstance(value, str) or not _MODULE_RE.fullmatch(value):
                self.problem(
                    line_of(item),
                    None,
                    f"imports: '{show(item)}' is not a module name (dotted, like actors.digest)",
                )
            elif value in lines:
                self.problem(
                    line_of(item),
                    None,
                    f"imports: '{value}' is listed twice (first at line {lines[value]})",
                )
            else:
                lines[value] = line_of(item)
        return tuple(lines), lines

    def defaults(self, part: tuple[Node, Node] | None) -> dict[str, Setting]:
        if part is None or is_null(part[1]):
            return {}
        node = self.as_mapping(part[1], None, "defaults: must be a mapping of settings")
        if node is None:
            return {}
        settings = self.settings(
            node,
            _DEFAULTABLE_KEYS,
            None,
            prefix="defaults: ",
            not_here="cannot have a default; set it in each schedule",
        )
        self.check_backoff(settings, {}, None, "defaults: ")
        # A bad default was reported once, here; schedules fall back to the built-in
        # value so they do not each repeat the same problem.
        return {k: s for k, s in settings.items() if s.value is not INVALID}

    def schedules(
        self, key_node: Node, node: Node, defaults: dict[str, Setting]
    ) -> tuple[dict[str, ScheduleSpec], dict[str, int]]:
        specs: dict[str, ScheduleSpec] = {}
        actor_lines: dict[str, int] = {}
        if is_null(node):
            # A file cut off after `schedules:` must not mean "remove every schedule".
            self.problem(
                line_of(key_node),
                None,
                "schedules is empty: write 'schedules: {}' if this file is meant to run nothing",
            )
            return specs, actor_lines
        found = self.as_mapping(node, None, "schedules must be a mapping of name -> settings")
        if found is None:
            return specs, actor_lines
        first_line: dict[str, int] = {}
        for name_node, value_node in found.value:
            line = name_node.start_mark.line + 1
            if not isinstance(name_node, ScalarNode):
                self.problem(line, None, "schedule names must be plain strings")
                continue
            if name_node.tag != STR_TAG:
                try:
                    scalar(name_node)  # refuses a tag on the name
                except Invalid as exc:
                    self.problem(line, None, exc.message)
                    continue
            name = name_node.value
            if name in first_line:
                self.problem(
                    line,
                    None,
                    f"duplicate schedule name '{show_text(name)}' "
                    f"(first defined at line {first_line[name]})",
                )
                continue
            first_line[name] = line
            if not _NAME_RE.fullmatch(name):
                self.problem(line, show_text(name), f"bad schedule name: {_NAME_RULE}")
                continue
            spec = self.schedule(name, line, value_node, defaults)
            if spec is not None:
                specs[name], actor_lines[name] = spec
        return specs, actor_lines

    # -- one schedule

    def schedule(
        self, name: str, line: int, node: Node, defaults: dict[str, Setting]
    ) -> tuple[ScheduleSpec, int] | None:
        body = node if node.__class__ is MappingNode and node.tag == MAP_TAG else None
        if body is None:
            body = self.as_mapping(
                node,
                name,
                "must be a mapping of settings (actor, and one of cron, every or at)",
                line=line if is_null(node) else None,
            )
            if body is None:
                return None
        before = len(self.problems)
        own = self.settings(body, _SCHEDULE_KEYS, name)
        self.check_required(name, line, own)
        self.check_backoff(own, defaults, name, "")
        merged = {**defaults, **own} if defaults else own
        if "keep" in own and "keep" in defaults:
            merged["keep"] = _inherit_keep(own["keep"], defaults["keep"])
        if "at" in merged or "start" in merged or "end" in merged:
            self.localize_times(name, merged)
            self.check_window(name, merged)
        # Every value refused (kept as INVALID) was reported, so this is the one test.
        if len(self.problems) > before:
            return None
        return _build_spec(self.file, name, line, merged), own["actor"].line

    def check_required(self, name: str, line: int, own: dict[str, Setting]) -> None:
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

    def localize_times(self, name: str, merged: dict[str, Setting]) -> None:
        """Give naive at/start/end the schedule's zone, then hold them to the fire range."""
        zone_setting = merged.get("timezone")
        zone_name = zone_setting.value if zone_setting else "UTC"
        if zone_name is INVALID:
            return  # already reported; the file is refused anyway
        for key in ("at", "start", "end"):
            setting = merged.get(key)
            if setting is None or setting.value is INVALID:
                continue
            value = setting.value
            if value.tzinfo is None:
                value = value.replace(tzinfo=ZoneInfo(zone_name))
            problem = time_range_problem(value)
            if problem is not None:
                self.problem(setting.line, name, f"{key}: {problem}")
                value = INVALID
            merged[key] = Setting(value, setting.line)

    def check_window(self, name: str, merged: dict[str, Setting]) -> None:
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
        if start is None or end is None or INVALID in (start.value, end.value):
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
        own: dict[str, Setting],
        defaults: dict[str, Setting],
        schedule: str | None,
        prefix: str,
    ) -> None:
        """min_backoff <= max_backoff, reported where one of the two is set."""
        if "min_backoff" not in own and "max_backoff" not in own:
            return  # nothing set here; defaults were checked on their own
        low = own.get("min_backoff") or defaults.get("min_backoff")
        high = own.get("max_backoff") or defaults.get("max_backoff")
        low_value = low.value if low else DEFAULT_MIN_BACKOFF
        high_value = high.value if high else DEFAULT_MAX_BACKOFF
        if low_value is INVALID or high_value is INVALID or low_value <= high_value:
            return
        line = own["max_backoff"].line if "max_backoff" in own else own["min_backoff"].line
        low_text = format_duration(low_value) + ("" if low else ", the default")
        high_text = format_duration(high_value) + ("" if high else ", the default")
        self.problem(
            line,
            schedule,
            f"{prefix}min_backoff ({low_text}) must not be more than max_backoff ({high_text})",
        )


def _inherit_keep(own: Setting, default: Setting) -> Setting:
    """A schedule's ``keep:`` takes what it leaves unset from ``defaults: keep:``, key by
    key (unlike ``alerts:``, which replaces the default whole): a default ``max_age`` still
    holds for a schedule that only sets its counts."""
    if own.value is INVALID:
        return own
    return Setting(own.value.over(default.value), own.line)


def _build_spec(file: str, name: str, line: int, merged: dict[str, Setting]) -> ScheduleSpec:
    values = {key: setting.value for key, setting in merged.items()}
    # check_required made sure there is exactly one.
    trigger = "cron" if "cron" in values else "every" if "every" in values else "at"
    values.update(name=name, trigger=cast("TriggerKind", trigger), file=file, line=line)
    return ScheduleSpec.from_values(values)


# --------------------------------------------------------------------- public API


def parse_schedules(text: str, file: str = DEFAULT_FILE) -> ScheduleFile:
    """Validate the text of a schedules file; raise ConfigError listing every problem."""
    parser = _Parser(file)
    with no_gc():
        # The tree is an argument only, so it is freed before collection resumes: a
        # collection over its million nodes would cost a second for nothing.
        result = parser.parse(compose(text, file))
    if parser.problems or result is None:
        raise ConfigError(sorted(parser.problems, key=lambda p: p.line))
    return result


def load_schedules(path: str | os.PathLike[str]) -> ScheduleFile:
    """Read and validate a schedules file; raise ConfigError on any problem."""
    file = os.fspath(path)
    return parse_schedules(read_file(file), file)
