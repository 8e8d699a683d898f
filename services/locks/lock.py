"""One acquisition of a named lock: taken with a random token, kept alive while the work
runs, released only if still ours."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

import redis

from services.context import current_fire, mark_skipped
from services.errors import LockBusy, LockError, LockLost, LockOptionsError
from services.locks.backends import Backend
from services.locks.config import current_backend
from services.locks.options import Duration, OnBusy, checked
from services.owned_keys import new_value
from services.redact import redact
from services.timeutil import iso

logger = logging.getLogger(__name__)

#: Longest pause of a waiting lock between two tries. A release wakes waiters at once
#: (pub/sub) and an expiry is waited for exactly (PTTL); this bounds a missed wake-up.
MAX_POLL_SECONDS = 0.5
#: Shortest such pause, so a key on the verge of expiry is not hammered.
MIN_POLL_SECONDS = 0.005

_held = threading.local()


def _held_by_this_thread() -> set[str]:
    keys: set[str] | None = getattr(_held, "keys", None)
    if keys is None:
        keys = _held.keys = set()
    return keys


def describe_holder(fields: dict[str, Any] | None) -> str | None:
    """Who holds a lock, for messages: ``instance (thread T, fire F) since ...``."""
    if not fields:
        return None
    detail = [f"thread {fields['thread']}"] if fields.get("thread") else []
    if fields.get("fire"):
        detail.append(f"fire {fields['fire']}")
    text = str(fields.get("holder") or "unknown")
    if detail:
        text += f" ({', '.join(detail)})"
    if fields.get("since"):
        text += f" since {fields['since']}"
    return text


class Lock:
    """A named lock: ``with Lock("rebuild-cache", ttl="5m"): ...``, or acquire()/release().

    Busy (held by someone else), ``on_busy`` decides: ``raise`` LockBusy (the default:
    a with-block cannot skip its own body), ``wait`` up to ``timeout`` (default: one TTL)
    then raise LockBusy, or ``skip``: the handle is falsy and, inside a cronwork fire, the
    attempt is marked skipped; the body must check (``if not held: return``).

    With ``extend`` (the default) a daemon thread extends the lock every ttl/3 while it is
    held, so the TTL bounds only how long a *dead* holder blocks others. If an extension
    finds the lock gone (expired, or Redis restarted empty) the handle's ``lost`` turns
    true and a WARNING is logged; the work is not interrupted: call ``check()`` at safe
    points to stop there. Not reentrant: a thread taking a lock it holds gets LockError.
    """

    def __init__(
        self,
        key: str,
        *,
        ttl: Duration,
        on_busy: OnBusy | str = OnBusy.RAISE,
        timeout: Duration | None = None,
        extend: bool = True,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise LockOptionsError(f"lock key must be a non-empty string, not {key!r}")
        self.key = key
        self.ttl, self.on_busy, timeout_s, self.extend = checked(ttl, on_busy, timeout, extend)
        #: Seconds a ``wait`` lock waits before it gives up.
        self.timeout = self.ttl if timeout_s is None else timeout_s
        #: True once acquire() got the lock (it stays true after release).
        self.acquired = False
        self._backend: Backend | None = None
        self._value = ""
        self._valid_until = 0.0
        self._acquired_at = 0.0
        self._lost = False
        self._stop = threading.Event()
        self._held_in: set[str] = set()

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    # -- taking ------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Take the lock: True if taken, False if busy and ``skip``; else LockBusy."""
        if self._value:
            raise LockError(f"lock '{self.key}' is already held by this handle")
        self.acquired, self._lost = False, False
        held_here = _held_by_this_thread()
        if self.key in held_here:
            raise LockError(f"lock '{self.key}' is already held by this thread (not reentrant)")
        backend = current_backend()
        fire = current_fire()
        owner = {"holder": backend.identity, "thread": threading.current_thread().name}
        if fire is not None:
            owner["fire"] = f"{fire.schedule}@{iso(fire.scheduled_for)}"
        value = new_value(**owner)
        started = time.monotonic()
        try:
            holder = self._take(backend, value, started)
        except redis.RedisError as exc:
            raise LockError(f"lock '{self.key}': Redis failed: {redact(str(exc))}") from exc
        if holder is not None:
            return self._busy(holder, time.monotonic() - started)
        self.acquired = True
        self._backend, self._value, self._acquired_at = backend, value, started
        self._held_in = held_here
        held_here.add(self.key)
        if self.extend:
            self._stop = threading.Event()
            threading.Thread(
                target=self._keep,
                args=(backend, value, self._stop),
                name=f"cronwork-lock-{self.key}",
                daemon=True,
            ).start()
        return True

    def _take(self, backend: Backend, value: str, started: float) -> dict[str, Any] | None:
        """Try (and for ``wait``, keep trying); None when taken, else the holder's fields."""
        if self._try(backend, value):
            return None
        if self.on_busy is not OnBusy.WAIT:
            fields, _ = backend.holder(self.key)
            return fields or {}
        deadline = started + self.timeout
        # Subscribe before the next try, so a release right after it still wakes us.
        with backend.waiter(self.key) as waiter:
            while True:
                if self._try(backend, value):
                    return None
                fields, left = backend.holder(self.key)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return fields or {}
                pause = min(remaining, MAX_POLL_SECONDS, MAX_POLL_SECONDS if left is None else left)
                waiter.wait(max(pause, MIN_POLL_SECONDS))

    def _try(self, backend: Backend, value: str) -> bool:
        attempt = time.monotonic()
        if not backend.take(self.key, value, self._ttl_ms):
            return False
        # Counted from before the call: the key may have been set late in the round trip.
        self._valid_until = attempt + self.ttl
        return True

    def _busy(self, fields: dict[str, Any], waited: float) -> bool:
        holder = describe_holder(fields)
        if self.on_busy is OnBusy.SKIP:
            reason = f"lock '{self.key}' is held by {holder or 'another holder'}"
            logger.info(
                "skipped: %s",
                reason,
                extra={"action": "lock_skipped", "lock": self.key},
            )
            mark_skipped(reason)
            return False
        raise LockBusy(self.key, holder, waited if self.on_busy is OnBusy.WAIT else None)

    # -- keeping -----------------------------------------------------------------------

    def _keep(self, backend: Backend, value: str, stop: threading.Event) -> None:
        """Extend every ttl/3 until released; on losing the lock say so once and stop."""
        while not stop.wait(self.ttl / 3):
            attempt = time.monotonic()
            try:
                extended = backend.extend(self.key, value, self._ttl_ms)
            except redis.RedisError as exc:
                if stop.is_set():
                    return
                if time.monotonic() < self._valid_until:
                    logger.warning(
                        "could not extend lock '%s' (%s); retrying",
                        self.key,
                        redact(str(exc)),
                        extra={"action": "lock_extend_failed", "lock": self.key},
                    )
                    continue
                self._lose("Redis was unreachable for a whole TTL")
                return
            if stop.is_set():
                return  # released meanwhile: a failed extension means nothing
            if not extended:
                self._lose("it expired or was taken over (or Redis lost it)")
                return
            self._valid_until = attempt + self.ttl

    def _lose(self, why: str) -> None:
        self._lost = True
        logger.warning(
            "lost lock '%s' after %.1fs while its work still runs: %s; another holder may "
            "run the same work now",
            self.key,
            time.monotonic() - self._acquired_at,
            why,
            extra={"action": "lock_lost", "lock": self.key},
        )

    @property
    def lost(self) -> bool:
        """True once this holder can no longer vouch for the lock: an extension found it
        gone, by its own clock its TTL ran out since the last extension, or the release
        found it gone. It stays true after the release, for the work to learn it there."""
        if self._lost:
            return True
        return bool(self._value) and time.monotonic() >= self._valid_until

    def check(self) -> None:
        """Raise LockLost if the lock was lost; call it where the work can stop safely."""
        if self.lost:
            raise LockLost(f"lock '{self.key}' was lost while held (TTL {self.ttl:g}s)")

    # -- releasing ---------------------------------------------------------------------

    def release(self) -> None:
        """Delete the lock if it is still ours; never someone else's. Idempotent."""
        value, self._value = self._value, ""
        backend = self._backend
        if not value or backend is None:
            return
        self._stop.set()
        self._held_in.discard(self.key)
        held_for = time.monotonic() - self._acquired_at
        try:
            released = backend.release(self.key, value)
        except redis.RedisError as exc:
            logger.warning(
                "could not release lock '%s' (%s); it frees at its TTL",
                self.key,
                redact(str(exc)),
                extra={"action": "lock_release_failed", "lock": self.key},
            )
            return
        if not released and not self._lost:
            self._lost = True
            logger.warning(
                "lock '%s' had expired before its release (held %.1fs, TTL %gs, extend %s): "
                "another holder may have run the same work meanwhile",
                self.key,
                held_for,
                self.ttl,
                self.extend,
                extra={"action": "lock_expired", "lock": self.key},
            )

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __bool__(self) -> bool:
        return self.acquired

    def __repr__(self) -> str:
        state = "lost" if self.lost else "held" if self._value else "not held"
        return f"<Lock {self.key!r} ttl={self.ttl:g}s on_busy={self.on_busy} {state}>"
