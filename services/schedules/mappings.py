"""One mapping of schedules.yaml read as settings: keys checked, values parsed, problems kept.

The base of the walker (services/schedules/loader.py): it reports every problem instead
of stopping at the first, each at its line, so the file is refused whole. Values go to
their parser in services/schedules/values.py; a single value seen before is taken from a
memo, since a large file repeats a few hundred values a hundred thousand times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from services.errors import CronError, DurationError, Problem
from services.redact import printable
from services.schedules.limits import MAX_VALUE_CHARS
from services.schedules.nodes import (
    STR_TAG,
    Expansion,
    Invalid,
    about,
    hint,
    mapping,
    plain_args,
    plain_kwargs,
    scalar,
    show_text,
)
from services.schedules.values import PARSERS, SCHEDULE_KEYS
from services.schedules.yaml_reader import line_of

#: Nesting level of a schedule's args and kwargs: root 1, schedules 2, the schedule 3.
ARGS_DEPTH = 4
#: Single values remembered per file (see MappingReader.scalar_value).
_MEMO_SIZE = 10_000
_URL_REFUSED = (
    "looks like a URL, and no setting takes one (the value is not shown: keep webhook "
    "URLs and other secrets out of this file)"
)

#: Marks a setting whose value was refused (already reported).
INVALID: Any = object()


@dataclass(slots=True)
class Setting:
    value: Any
    line: int


class MappingReader:
    """Reads the mappings of one file, collecting problems instead of stopping at the first."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.expansion = Expansion(set())
        #: (key, tag, text) -> (True, parsed value) of single values seen in this file.
        self.memo: dict[tuple[str, str, str], tuple[bool, Any]] = {}

    def problem(self, line: int, schedule: str | None, message: str) -> None:
        self.problems.append(Problem(self.file, line, schedule, message))

    def reporter(self, schedule: str | None, prefix: str = "") -> Callable[[Node, str], None]:
        return lambda node, message: self.problem(line_of(node), schedule, prefix + message)

    def as_mapping(
        self, node: Node, schedule: str | None, not_one: str, line: int | None = None
    ) -> MappingNode | None:
        """``node`` if it is a plain mapping; else report ``not_one`` (or its tag)."""
        try:
            found = mapping(node)
        except Invalid as exc:
            self.problem(line_of(node), schedule, exc.message)
            return None
        if found is None:
            self.problem(line or line_of(node), schedule, not_one)
        return found

    def entries(
        self, node: MappingNode, report: Callable[[Node, str], None]
    ) -> list[tuple[str, Node, Node]]:
        """(key, key_node, value_node) of a mapping, refusing duplicate and non-string keys.

        Keys are taken as written (node.value), so `on:` or `2026:` are names, not a bool
        or an int. A duplicate is reported and dropped, so its value is not checked twice.
        """
        first_line: dict[str, int] = {}
        out: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            key = self.key(key_node, first_line, report)
            if key is not None:
                out.append((key, key_node, value_node))
        return out

    @staticmethod
    def key(
        key_node: Node, first_line: dict[str, int], report: Callable[[Node, str], None]
    ) -> str | None:
        """The key as written, noted in ``first_line``; None (reported) if it is refused."""
        if not isinstance(key_node, ScalarNode):
            report(key_node, "keys must be plain names, not a list or mapping")
            return None
        key: str = key_node.value
        if key == "<<":
            report(key_node, "YAML merge keys ('<<') are not supported; use 'defaults'")
            return None
        if key_node.tag != STR_TAG:
            try:
                scalar(key_node)  # refuses a tag on the key
            except Invalid as exc:
                report(key_node, exc.message)
                return None
        if key in first_line:
            report(key_node, f"duplicate key '{show_text(key)}' (first at line {first_line[key]})")
            return None
        first_line[key] = key_node.start_mark.line + 1
        return key

    def settings(
        self,
        node: MappingNode,
        allowed: frozenset[str],
        schedule: str | None,
        prefix: str = "",
        not_here: str = "",
    ) -> dict[str, Setting]:
        """Parse each key of a defaults/schedule mapping, reporting what is wrong.

        A key whose value was refused is kept as ``INVALID`` so later checks know it
        was there (e.g. a bad ``cron`` still counts as the schedule's trigger). Runs once
        per schedule: the common case (a plain key, a value seen before) is kept short.
        """
        report = self.reporter(schedule, prefix)
        out: dict[str, Setting] = {}
        first_line: dict[str, int] = {}
        memo = self.memo
        for key_node, value_node in node.value:
            key = key_node.value
            if (
                key_node.__class__ is not ScalarNode
                or key_node.tag != STR_TAG
                or key in first_line
                or key == "<<"
            ):
                key = self.key(key_node, first_line, report)
                if key is None:
                    continue
            else:
                first_line[key] = key_node.start_mark.line + 1
            if key not in allowed:
                if not_here and key in SCHEDULE_KEYS:
                    report(key_node, f"'{key}' {not_here}")
                else:
                    report(key_node, f"unknown key '{show_text(key)}'{hint(key, allowed)}")
                continue
            if value_node.__class__ is ScalarNode:
                found = memo.get((key, value_node.tag, value_node.value))
                ok, value = found or self.scalar_value(key, value_node)
            else:
                ok, value = self.value(key, value_node)
            if not ok:
                problem_node, message = value
                report(problem_node, about(key, message))
                value = INVALID
            out[key] = Setting(value, value_node.start_mark.line + 1)
        return out

    def scalar_value(self, key: str, node: ScalarNode) -> tuple[bool, Any]:
        """``value`` for a single value, remembered: a large file repeats the same few
        hundred (``actor: tick``, ``every: 5m``) a hundred thousand times."""
        ok, value = self.value(key, node)
        # A problem is not remembered: it names its node, the line of another use differs.
        if ok and len(self.memo) < _MEMO_SIZE:
            self.memo[(key, node.tag, node.value)] = (ok, value)
        return ok, value

    def value(self, key: str, node: Node) -> tuple[bool, Any]:
        """(True, the parsed value) or (False, (node, what is wrong))."""
        try:
            if key == "args":
                return True, plain_args(node, ARGS_DEPTH, self.expansion)
            if key == "kwargs":
                return True, plain_kwargs(node, ARGS_DEPTH, self.expansion)
            if isinstance(node, ScalarNode):
                if len(node.value) > MAX_VALUE_CHARS:
                    raise Invalid(
                        f"value is too long ({len(node.value):,} characters; "
                        f"at most {MAX_VALUE_CHARS})"
                    )
                if "://" in node.value:
                    raise Invalid(_URL_REFUSED)
            return True, PARSERS[key](node)
        except Invalid as exc:
            return False, (exc.node or node, exc.message)
        except (DurationError, CronError) as exc:
            return False, (node, printable(str(exc)))
