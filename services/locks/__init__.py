"""Distributed locks for work triggered by a condition, not a clock.

::

    from services.locks import Lock, locked

    with Lock("rebuild-cache", ttl="5m", on_busy="skip") as held:
        if held:
            rebuild_cache()

    @locked("invoice-{customer_id}", ttl="5m")  # busy: skip (returns None)
    def send_invoice(customer_id: int) -> None: ...

Locks live in Redis at ``<prefix>:lock:<key>`` (``SET NX PX`` with a random token,
extended and released by Lua compare-and-act) once the process called ``configure()``;
without Redis (embedded mode) they are process-local with the same semantics.

A lock with a TTL is for efficiency (one holder, nearly always), not correctness: a
holder paused past its TTL runs on while another takes the lock. Work that must never
run twice needs a fence where it writes (a unique key, a version check).
"""

from __future__ import annotations

from services.errors import LockBusy, LockError, LockLost, LockOptionsError
from services.locks.config import configure
from services.locks.decorator import locked
from services.locks.lock import Lock
from services.locks.options import LockOptions, OnBusy

__all__ = [
    "Lock",
    "LockBusy",
    "LockError",
    "LockLost",
    "LockOptions",
    "LockOptionsError",
    "OnBusy",
    "configure",
    "locked",
]
