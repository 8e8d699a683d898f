"""What several commands share: the schedules, the database, JSON and table output."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from services.errors import UnknownSchedule
from services.redact import redact, shown
from services.schedules.spec import ScheduleSpec
from services.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger("cronwork")
#: Schedule names listed when a name is unknown (a file may hold 100,000).
KNOWN_SHOWN = 20


def load_specs(settings: Settings) -> dict[str, ScheduleSpec]:
    from services.runtime import load_schedule_file

    return load_schedule_file(settings).schedules


def find_spec(
    settings: Settings, name: str, specs: dict[str, ScheduleSpec] | None = None
) -> ScheduleSpec:
    specs = load_specs(settings) if specs is None else specs
    if name not in specs:
        names = list(specs)
        known = ", ".join(names[:KNOWN_SHOWN]) or "none"
        if len(names) > KNOWN_SHOWN:
            known += f" and {len(names) - KNOWN_SHOWN:,} more"
        raise UnknownSchedule(
            f"no schedule named '{name}' in {settings.schedules_file} (known: {known})"
        )
    return specs[name]


def open_engine(settings: Settings, *, read_only: bool = False, wait: bool = False) -> Engine:
    """The database of a migrated deployment (commands other than migrate/up never migrate).

    ``read_only``: for commands that only read; they never create the embedded file and
    work on a read-only volume. ``wait``: for processes that run for long, wait while the
    database is away.
    """
    from services.runtime import engine_for, ensure_schema

    engine = engine_for(settings, read_only=read_only)
    ensure_schema(settings, engine, migrate=False, wait=wait)
    return engine


def masked(value: Any) -> Any:
    """``value`` (JSON-ready) with every string passed through ``redact``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [masked(item) for item in value]
    if isinstance(value, dict):
        return {key: masked(item) for key, item in value.items()}
    return value


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """Rows as aligned columns; every cell masked and on one line (stored errors are
    whatever an actor raised, escape sequences included)."""
    cells = [tuple(shown(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call ``stop`` (a graceful shutdown) instead of killing."""

    def handler(signum: int, _frame: Any) -> None:
        logger.info("received %s; shutting down", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
