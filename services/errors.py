"""One error hierarchy for cronwork. Each class's docstring is its default message."""

from __future__ import annotations

from services.redact import shown


class CronworkError(Exception):
    """cronwork failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class CronError(CronworkError, ValueError):
    """Invalid cron expression."""


class DurationError(CronworkError, ValueError):
    """Invalid duration."""


class Problem:
    """One thing wrong in a schedules file, located by file and line."""

    __slots__ = ("file", "line", "message", "schedule")

    def __init__(self, file: str, line: int, schedule: str | None, message: str) -> None:
        self.file = file
        self.line = line
        self.schedule = schedule
        self.message = message

    def __str__(self) -> str:
        # One line, whatever the file held: secrets masked, control characters escaped.
        where = f"{self.file}:{self.line}"
        if self.schedule is not None:
            return shown(f"{where}: schedule '{self.schedule}': {self.message}")
        return shown(f"{where}: {self.message}")

    def __repr__(self) -> str:
        return f"Problem({self!s})"


class TimeInputError(CronworkError, ValueError):
    """Invalid time: give an ISO 8601 time or a duration from now such as '2h'."""


class ConfigError(CronworkError):
    """The schedules file is invalid; nothing of it was applied."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UnknownSchedule(CronworkError):
    """No such schedule."""


class LockError(CronworkError):
    """The lock could not be used."""


class LockBusy(LockError):
    """The lock is held by someone else."""

    def __init__(self, key: str, holder: str | None = None, waited: float | None = None) -> None:
        self.key = key
        self.holder = holder
        self.waited = waited
        message = f"lock '{key}' is busy"
        if holder:
            message += f": held by {holder}"
        if waited is not None:
            message += f"; gave up after waiting {waited:.3g}s"
        super().__init__(message)


class LockLost(LockError):
    """The lock expired or was taken over while its holder was still running."""


class LockOptionsError(LockError, ValueError):
    """Invalid lock options."""
