"""What several commands share: the schedules, the database, JSON and table output."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from services.errors import UnknownSchedule
from services.schedules.spec import ScheduleSpec
from services.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger("cronwork")


def load_specs(settings: Settings) -> dict[str, ScheduleSpec]:
    from services.runtime import load_schedule_file

    return load_schedule_file(settings).schedules


def find_spec(
    settings: Settings, name: str, specs: dict[str, ScheduleSpec] | None = None
) -> ScheduleSpec:
    specs = load_specs(settings) if specs is None else specs
    if name not in specs:
        known = ", ".join(specs) or "none"
        raise UnknownSchedule(
            f"no schedule named '{name}' in {settings.schedules_file} (known: {known})"
        )
    return specs[name]


def open_engine(settings: Settings, *, wait: bool = False) -> Engine:
    """The database of a migrated deployment (commands other than migrate/up never migrate).

    ``wait``: for processes that run for long, wait while the database is away.
    """
    from services.runtime import engine_for, ensure_schema

    engine = engine_for(settings)
    ensure_schema(settings, engine, migrate=False, wait=wait)
    return engine


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call ``stop`` (a graceful shutdown) instead of killing."""

    def handler(signum: int, _frame: Any) -> None:
        logger.info("received %s; shutting down", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
