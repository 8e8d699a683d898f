"""Quiet outages: one WARNING when a dependency goes away, one INFO when it is back.

Every loop of every process talks to Postgres or Redis several times a second. While one
of them is down, logging each failure (with its traceback) buried the one line that
mattered under hundreds. Each process now keeps one :class:`Dependency` per server:
the first failure is logged at WARNING, later ones are only counted, and the first
success afterwards logs at INFO how long it was away and how many operations failed.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from dramatiq import errors as dramatiq_errors
from sqlalchemy import exc as sa_exc

from services.redact import redact

logger = logging.getLogger("cronwork.outages")


class Dependency:
    """One server this process depends on; thread-safe."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, what: str, exc: BaseException) -> None:
        """``what`` failed because this dependency is unreachable."""
        with self._lock:
            self._failures += 1
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        logger.warning(
            "%s unreachable (%s failed: %s: %s); carrying on and retrying",
            self.name,
            what,
            type(exc).__name__,
            redact(str(exc).strip().splitlines()[0] if str(exc).strip() else ""),
            extra={"action": "dependency_down", "dependency": self.name},
        )

    def ok(self) -> None:
        """An operation on this dependency just succeeded."""
        if self._down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self._down_since is None:
                return
            away = time.monotonic() - self._down_since
            failures, self._failures, self._down_since = self._failures, 0, None
        logger.info(
            "%s is back after %.1fs; %d operation(s) failed meanwhile",
            self.name,
            away,
            failures,
            extra={"action": "dependency_back", "dependency": self.name, "failures": failures},
        )


#: The process's view of its two servers.
DATABASE = Dependency("database")
REDIS = Dependency("redis")


def dependency_of(exc: BaseException) -> Dependency | None:
    """The server whose unreachability ``exc`` reports, or None for any other error."""
    if isinstance(
        exc, redis.ConnectionError | redis.TimeoutError | dramatiq_errors.BrokerConnectionError
    ):
        return REDIS
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return DATABASE
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return DATABASE
    module = type(exc).__module__
    if module.startswith("psycopg2") and type(exc).__name__ in (
        "OperationalError",
        "InterfaceError",
    ):
        return DATABASE
    return None
