"""Jobs that run under a lock with no code: the ``lock`` option of a schedule or an actor.

``lock: {key: "sync-{region}", ttl: 10m, on_busy: skip}`` in schedules.yaml travels in the
message (``LOCK_OPTION``); ``@dramatiq.actor(lock={...})`` declares it for an actor sent
from code. The key is a template over the actor's arguments (services/locks/options.py).
Tracking takes the lock once the attempt is claimed and releases it when the attempt
ends: a busy lock under ``skip`` records the attempt ``skipped`` with the holder named;
under ``raise`` (or ``wait`` running out) it fails the attempt like any error, and
Retries tries again later.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq

from services.constants import LOCK_OPTION
from services.locks import Lock, LockOptions


class JobLocks:
    """The lock a message's job runs under, if any; LockOptions validated once per source."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], LockOptions] = {}
        self._guard = threading.Lock()

    def lock_for(self, broker: dramatiq.Broker, message: Any) -> Lock | None:
        actor = broker.get_actor(message.actor_name)
        raw = message.options.get(LOCK_OPTION) or actor.options.get(LOCK_OPTION)
        if not raw:
            return None
        key = (message.actor_name, repr(sorted(raw.items())) if isinstance(raw, dict) else "")
        options = self._cache.get(key)
        if options is None:
            options = LockOptions.from_mapping(raw).for_function(actor.fn)
            with self._guard:
                self._cache[key] = options
        return options.lock(message.args, message.kwargs)
