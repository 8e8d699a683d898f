"""Argument types that refuse what a command cannot mean, in the parser, on one line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, NoReturn

from services.redact import printable

#: Shown with a refused time: what ``--after`` accepts.
TIME_HINT = (
    "an ISO 8601 time like 2026-12-01T09:00:00+01:00 or 2026-12-01 (naive: in the schedule's zone)"
)
#: A command's default naming its positional of JSON values that may follow its options.
JSON_TAIL = "json_tail"
#: Years a time argument may name: those a schedule can fire in (services.schedules.values).
FIRST_YEAR, LAST_YEAR = 1970, 8999


class CheckedParser(argparse.ArgumentParser):
    """argparse, with its errors on one line and the way to help named.

    argparse prints the whole usage first; a script's log (or a person) needs the one
    line that says what is wrong. Exit status 2, as argparse's.
    """

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {printable(message)} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """argparse, and a command's JSON values after its options (``cronwork run NAME
        --key K -- 1 '"a"'``): argparse fills a ``nargs="*"`` positional with the name's
        chunk, before the options, and hands back what follows them as unrecognized."""
        ns, extras = super().parse_known_args(args, namespace)
        dest = getattr(ns, JSON_TAIL, None)
        if not extras or dest is None:
            return ns, extras
        if extras[0] == "--":
            extras = extras[1:]
        elif any(e.startswith("--") for e in extras):
            return ns, extras  # an unknown option: argparse refuses it
        try:
            values = [json_value(e) for e in extras]
        except argparse.ArgumentTypeError as exc:
            self.error(f"argument {dest}: {exc}")
        setattr(ns, dest, [*getattr(ns, dest), *values])
        return ns, []


def count(low: int, high: int) -> Callable[[str], int]:
    """A whole number in ``[low, high]``: -1 is not "no limit", 10**9 is not a plan."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {high}, got '{text}'"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    parse.__name__ = "count"  # argparse names the type in some messages
    return parse


def iso_time(text: str) -> datetime:
    """An ISO 8601 time (``Z`` for UTC); naive ones are read in the schedule's zone later."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {TIME_HINT}, got '{text}'") from None
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        raise argparse.ArgumentTypeError(
            f"{parsed.isoformat()} is outside the years schedules fire in "
            f"({FIRST_YEAR}-{LAST_YEAR})"
        )
    return parsed


def choice(values: type[StrEnum]) -> Callable[[str], StrEnum]:
    """One of a vocabulary's values (services/vocabulary.py), named in the refusal."""
    listed = ", ".join(v.value for v in values)

    def parse(text: str) -> StrEnum:
        try:
            return values(text.strip().lower())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected one of {listed}, got '{text}'") from None

    parse.__name__ = values.__name__
    return parse


def json_value(text: str) -> Any:
    """One JSON value: an argument of an actor (``'"acme"'``, ``42``, ``'{"a": 1}'``)."""
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a JSON value (a string in double quotes: '\"{text}\"'), got '{text}'"
        ) from None


def json_object(text: str) -> dict[str, Any]:
    """A JSON object: an actor's keyword arguments."""
    value = json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"a\": 1}}', got '{text}'"
        )
    return value


def printable_text(low: int, high: int) -> Callable[[str], str]:
    """A string of ``low`` to ``high`` printable characters (a column holds no more)."""

    def parse(value: str) -> str:
        if not low <= len(value) <= high or not value.isprintable():
            raise argparse.ArgumentTypeError(
                f"expected {low}-{high} printable characters, got {len(value)} characters"
            )
        return value

    parse.__name__ = "printable_text"
    return parse
