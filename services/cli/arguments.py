"""Argument types that refuse what a command cannot mean, in the parser, on one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import NoReturn

from services.redact import printable

#: Shown with a refused time: what ``--after`` accepts.
TIME_HINT = (
    "an ISO 8601 time like 2026-12-01T09:00:00+01:00 or 2026-12-01 (naive: in the schedule's zone)"
)
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
