"""What every command needs before it runs: settings → engine, schedules, broker."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import time
from pathlib import Path

import dramatiq
from sqlalchemy import Engine, inspect

from services.broker import sender_broker
from services.errors import ConfigError, CronworkError
from services.outages import DATABASE, dependency_of
from services.schedules.actors import check_actors
from services.schedules.loader import ScheduleFile, load_schedules
from services.settings import Settings
from services.store.engines import make_engine

logger = logging.getLogger(__name__)


class SchemaMissing(CronworkError):
    """The database has no cronwork tables: run `cronwork migrate` (or `cronwork up`) first."""


def engine_for(
    settings: Settings, *, pool_size: int = 5, pre_ping: bool = True, read_only: bool = False
) -> Engine:
    """The configured database; ``read_only`` never creates the embedded file or writes."""
    if settings.database_url is None:
        if read_only:
            path = settings.data_dir / "cronwork.sqlite3"
            if not path.is_file():
                raise SchemaMissing(
                    f"no cronwork database at {path}: run `cronwork up` in this folder first, "
                    "or set CRONWORK_DATABASE_URL"
                )
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(
        settings.database_url_value(), pool_size=pool_size, pre_ping=pre_ping, read_only=read_only
    )


def ensure_schema(settings: Settings, engine: Engine, *, migrate: bool, wait: bool = False) -> None:
    """``migrate``/``up`` upgrade the schema; other commands refuse a database without it.

    Only those two migrate: a ``cronwork status`` run while ``cronwork up`` starts would
    otherwise race it through the same migration on the embedded SQLite file.

    ``wait``: a long-running process (scheduler, worker) that starts while the database
    is away waits for it, saying so once, instead of exiting into a restart loop.
    """
    delay = 0.5
    while True:
        try:
            if migrate:
                from services.store.migrate import upgrade  # Alembic only where it runs

                upgrade(settings.database_url_value())
                return
            if not inspect(engine).has_table("cronwork_fires"):
                raise SchemaMissing()
            DATABASE.ok()
            return
        except Exception as exc:
            if not wait or dependency_of(exc) is not DATABASE:
                raise
            DATABASE.failed("start (waiting for the database)", exc)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def load_schedule_file(settings: Settings) -> ScheduleFile:
    return load_schedules(settings.schedules_file)


def prepare_broker(
    settings: Settings,
    schedule_file: ScheduleFile,
    broker: dramatiq.Broker | None = None,
) -> dramatiq.Broker:
    """Set the global broker, import the actor modules onto it and check every actor exists."""
    broker = broker or sender_broker(settings)
    dramatiq.set_broker(broker)
    # `imports:` resolve next to schedules.yaml and in the working directory.
    for folder in (Path.cwd(), Path(schedule_file.path).resolve().parent):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    problems = check_actors(schedule_file, broker)
    if problems:
        raise ConfigError(problems)
    for spec in schedule_file.schedules.values():
        if spec.queue not in broker.get_declared_queues():
            broker.declare_queue(spec.queue)
    return broker


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc only; elsewhere nothing).

    Syncing 10,000 schedules builds and drops tens of MB (rows, statements); glibc keeps
    freed memory in the middle of its heap for later, so the scheduler stayed that much
    bigger for its whole life.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass
