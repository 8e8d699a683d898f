"""Import the modules a schedules file lists and check that every schedule's actor exists."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from services.errors import LockOptionsError, Problem
from services.locks.options import LockOptions
from services.redact import printable, redact
from services.schedules.loader import ScheduleFile
from services.schedules.values import hint

if TYPE_CHECKING:
    import dramatiq

#: Longest part of an import error quoted in a problem (the rest is in no one's interest).
_ERROR_CHARS = 300


def check_actors(schedule_file: ScheduleFile, broker: dramatiq.Broker) -> list[Problem]:
    """Import the file's modules and check every schedule's actor is declared on ``broker``.

    The caller must have set ``broker`` as the global broker (dramatiq.set_broker)
    first, so ``@dramatiq.actor`` in the imported modules registers on it.
    """
    from dramatiq.errors import ActorNotFound

    file = schedule_file.path
    problems: list[Problem] = []
    for module in schedule_file.imports:
        reason = _import(module)
        if reason is not None:
            line = schedule_file.import_lines.get(module, 1)
            problems.append(Problem(file, line, None, f"cannot import '{module}': {reason}"))
    imported = ", ".join(schedule_file.imports) or "none"
    declared: list[str] | None = None
    for name, spec in schedule_file.schedules.items():
        try:
            actor = broker.get_actor(spec.actor)
        except ActorNotFound:
            if declared is None:
                declared = list(broker.get_declared_actors())
            line = schedule_file.actor_lines.get(name, spec.line)
            problems.append(
                Problem(
                    file,
                    line,
                    name,
                    f"actor '{spec.actor}' is not defined (imports: {imported})"
                    f"{hint(spec.actor, declared)}",
                )
            )
            continue
        if spec.lock is not None:
            # The key's template must name the actor's arguments: refused here, at its
            # schedule, not at run time on a worker.
            try:
                LockOptions.from_mapping(spec.lock).for_function(actor.fn)
            except LockOptionsError as exc:
                line = schedule_file.actor_lines.get(name, spec.line)
                problems.append(Problem(file, line, name, printable(str(exc))))
    return sorted(problems, key=lambda p: p.line)


def _import(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None when it was."""
    try:
        importlib.import_module(module)
    except SystemExit as exc:
        # A module that calls sys.exit() at import would end `check` with its status
        # (0: success, and no output at all).
        return f"it calls sys.exit({exc.code!r}) when imported"
    except Exception as exc:  # any failure in user code is a problem to report, not a crash
        text = printable(redact(str(exc)))
        if len(text) > _ERROR_CHARS:
            text = text[:_ERROR_CHARS] + "..."
        return f"{type(exc).__name__}: {text}"
    return None
