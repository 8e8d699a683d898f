"""The ``cronwork`` command line: the parser and the one place errors become exit codes.

The commands live beside it by what they do: ``processes`` (scheduler, worker, up, web,
migrate, check), ``reports`` (next, status, history, incidents) and ``steer`` (trigger,
pause, resume, audit).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum

from pydantic import ValidationError

from services import __version__
from services.cli.arguments import (
    JSON_TAIL,
    CheckedParser,
    choice,
    count,
    iso_time,
    json_object,
    json_value,
    printable_text,
)
from services.cli.processes import (
    cmd_check,
    cmd_migrate,
    cmd_scheduler,
    cmd_up,
    cmd_web,
    cmd_worker,
)
from services.cli.reports import cmd_history, cmd_incidents, cmd_next, cmd_status
from services.cli.steer import (
    add_steer_options,
    cmd_audit,
    cmd_pause,
    cmd_resume,
    cmd_run,
    cmd_trigger,
)
from services.errors import ConfigError, CronworkError
from services.logs import configure_logging, configure_redaction
from services.redact import printable, shown
from services.settings import Settings, describe
from services.vocabulary import FireKind, FireStatus

logger = logging.getLogger("cronwork")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"cronwork: invalid settings: {printable(describe(exc))}", file=sys.stderr)
        return 2
    configure_redaction(settings)
    configure_logging(settings)
    try:
        return int(args.func(settings, args) or 0)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        refused = shown(str(settings.schedules_file))
        print(f"cronwork: {refused} refused; nothing applied", file=sys.stderr)
        return 1
    except CronworkError as exc:
        print(f"cronwork: {shown(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clean line, never a traceback with a URL in it
        reason = user_error(exc)
        if reason is None:
            logger.debug("unexpected error", exc_info=True)
            reason = f"{type(exc).__name__}: {exc}"
        print(f"cronwork: {shown(first_line(reason))}", file=sys.stderr)
        return 1


def user_error(exc: Exception) -> str | None:
    """What a user can fix, for errors that come from their settings or servers."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return (
            "CRONWORK_DATABASE_URL is not a database URL cronwork can use "
            "(e.g. postgresql+psycopg2://user:password@host:5432/cronwork)"
        )
    if isinstance(exc, DBAPIError):
        return f"database error: {exc.orig if exc.orig is not None else exc}"
    if isinstance(exc, RedisError):
        return f"Redis error: {exc}"
    return None


def first_line(text: str) -> str:
    """The first line of a message (drivers append SQL and links on later ones)."""
    return text.strip().split("\n", 1)[0] or text


def _listed(values: type[StrEnum]) -> str:
    return ", ".join(v.value for v in values)


def build_parser() -> argparse.ArgumentParser:
    p = CheckedParser(prog="cronwork", description="Recurring work, on time, once.")
    p.add_argument("--version", action="version", version=f"cronwork {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(
        name: str, func: Callable[[Settings, argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    cmd("check", cmd_check, "validate schedules.yaml and that every actor exists")
    cmd("migrate", cmd_migrate, "create or upgrade the database schema (Alembic upgrade head)")
    cmd("scheduler", cmd_scheduler, "run a scheduler replica (only the lease holder fires)")
    w = cmd("worker", cmd_worker, "run Dramatiq workers that execute and track the actors")
    w.add_argument("--processes", "-p", type=count(1, 256), default=os.cpu_count() or 1)
    w.add_argument("--threads", "-t", type=count(1, 256), default=8)
    w.add_argument("--queues", "-Q", nargs="+", help="queues to consume (default: all)")
    w.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if this container's worker heartbeat is fresh, 1 otherwise (liveness)",
    )
    up = cmd("up", cmd_up, "scheduler and worker in one process (embedded when no URLs are set)")
    up.add_argument("--threads", "-t", type=count(1, 256), default=4)
    n = cmd("next", cmd_next, "print a schedule's next fire times")
    n.add_argument("name")
    n.add_argument("-n", type=count(1, 1000), default=5, help="how many, 1-1000 (default 5)")
    n.add_argument("--after", type=iso_time, help="ISO time to start from (default now)")
    n.add_argument("--json", action="store_true")
    s = cmd("status", cmd_status, "the lease holder and every schedule's state")
    s.add_argument("--json", action="store_true")
    h = cmd("history", cmd_history, "newest fires first, with their attempts")
    h.add_argument("--schedule")
    h.add_argument(
        "--actor", help="ad-hoc runs of this actor and fires of the schedules that run it"
    )
    h.add_argument("--status", type=choice(FireStatus), help="one of: " + _listed(FireStatus))
    h.add_argument("--kind", type=choice(FireKind), help="one of: " + _listed(FireKind))
    h.add_argument(
        "--since",
        type=iso_time,
        help="scheduled at or after this ISO time (naive: the --schedule's zone, else UTC)",
    )
    h.add_argument("--limit", type=count(1, 10_000), default=20, help="1-10000 (default 20)")
    h.add_argument("--json", action="store_true")
    i = cmd("incidents", cmd_incidents, "open incidents (watchdog findings, final failures)")
    i.add_argument("--all", action="store_true", help="resolved ones too (newest first)")
    i.add_argument("--limit", type=count(1, 10_000), default=50, help="1-10000 (default 50)")
    i.add_argument("--json", action="store_true")
    steer = {}
    for name, func, text in (
        ("trigger", cmd_trigger, "fire a schedule now (kind manual)"),
        ("pause", cmd_pause, "stop a schedule from firing, until resumed (or --until)"),
        ("resume", cmd_resume, "let a paused schedule fire again"),
    ):
        steer[name] = cmd(name, func, text)
        steer[name].add_argument("name")
    add_steer_options(steer)
    a = cmd("audit", cmd_audit, "who triggered, paused, resumed or re-ran what, and why")
    a.add_argument("--schedule")
    a.add_argument("--limit", type=count(1, 10_000), default=50, help="1-10000 (default 50)")
    a.add_argument("--json", action="store_true")
    r = cmd("run", cmd_run, "send one tracked ad-hoc run of an actor (kind adhoc)")
    r.add_argument("name", help="the actor's name")
    r.add_argument(
        "args", nargs="*", type=json_value, help="its positional arguments, one JSON value each"
    )
    r.add_argument(
        "--key", type=printable_text(1, 200), help="idempotency key: a key held runs nothing"
    )
    r.add_argument(
        "--kwargs", type=json_object, default={}, help="its keyword arguments, a JSON object"
    )
    r.add_argument("--json", action="store_true")
    r.set_defaults(**{JSON_TAIL: "args"})
    cmd("web", cmd_web, "serve the dashboard (and /healthz, /readyz, /metrics) on its own")
    return p
