"""The process-wide lock backend, set by ``configure()`` in each entry point.

Nothing is read from the environment: cronwork's processes pass their Settings, other
application code passes a Redis URL. A lock used before ``configure()`` raises instead of
quietly falling back to a process-local lock that would exclude nothing elsewhere.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import redis

from services.errors import LockError
from services.locks.backends import Backend, LocalBackend, RedisBackend
from services.settings import Settings

logger = logging.getLogger(__name__)

#: Longest wait for Redis on one lock call. Extension runs every ttl/3, so a TTL under
#: three times this can lapse while an extension hangs (the holder's ``lost`` still
#: turns true on time: it goes by the holder's own clock).
REDIS_TIMEOUT_SECONDS = 5.0

_backend: Backend | None = None
_said_local = False
_configuring = threading.Lock()


def configure(
    settings: Settings | None = None,
    *,
    redis_url: str | None = None,
    prefix: str | None = None,
    instance_id: str | None = None,
) -> None:
    """Set where this process's locks live.

    ``configure(settings)`` in cronwork's processes; ``configure(redis_url=..., prefix=...)``
    in application code (``prefix`` must match the deployment's ``CRONWORK_REDIS_PREFIX``
    for its locks to exclude cronwork's jobs). Without a Redis URL, locks are process-local
    (cronwork's embedded mode). Calling it again replaces the backend for locks taken later.
    """
    global _backend, _said_local
    if settings is not None:
        if redis_url is not None or prefix is not None or instance_id is not None:
            raise LockError("configure() takes settings, or redis_url/prefix/instance_id")
        redis_url = settings.redis_url_value()
        prefix = settings.redis_prefix
        instance_id = settings.instance_id
    identity = instance_id or f"{socket.gethostname()}-{os.getpid()}"
    backend: Backend
    if redis_url is None:
        backend = LocalBackend(identity)
    else:
        client = redis.Redis.from_url(
            redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        default_prefix: str = Settings.model_fields["redis_prefix"].default
        backend = RedisBackend(client, prefix or default_prefix, identity)
    with _configuring:
        _backend = backend
        say_local = not backend.shared and not _said_local
        _said_local = _said_local or say_local
    if say_local:
        # INFO, not WARNING: embedded mode is one process by design, and `cronwork up`
        # already warns that it is single-instance; in it a local lock excludes all there is.
        logger.info(
            "locks are process-local (no Redis configured): they exclude this process's "
            "threads only",
            extra={"action": "locks_local"},
        )


def current_backend() -> Backend:
    """The configured backend; LockError if ``configure()`` was never called."""
    backend = _backend
    if backend is None:
        raise LockError(
            "locks are not configured in this process: call "
            "services.locks.configure(settings) or configure(redis_url=..., prefix=...) first"
        )
    return backend


def _reset() -> None:
    """Forget the configuration (tests only)."""
    global _backend, _said_local
    with _configuring:
        _backend = None
        _said_local = False
