"""``@locked("invoice-{customer_id}", ttl="5m")``: a function that runs under a lock."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from services.errors import LockOptionsError
from services.locks.options import Duration, LockOptions, OnBusy

P = ParamSpec("P")
R = TypeVar("R")


def locked(
    key: str,
    *,
    ttl: Duration,
    on_busy: OnBusy | str = OnBusy.SKIP,
    timeout: Duration | None = None,
    extend: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Run the decorated function under the lock ``key``, templated from its arguments.

    ``key`` is a ``str.format`` template over the function's parameter names, filled from
    each call's arguments, positional or keyword (``"sync-{region}"``). A template naming
    no parameter is refused when decorating. Busy: ``skip`` (the default) returns None
    without running (inside a cronwork fire the attempt is recorded skipped), ``wait``
    waits up to ``timeout`` (default one TTL) then raises LockBusy, ``raise`` raises it.

    On a Dramatiq actor, put it *below* ``@dramatiq.actor``: the actor then runs locked.
    """
    options = LockOptions.of(key, ttl=ttl, on_busy=on_busy, timeout=timeout, extend=extend)

    def decorate(fn: Callable[P, R]) -> Callable[P, R | None]:
        if hasattr(fn, "actor_name") and hasattr(fn, "send"):
            raise LockOptionsError(
                f"@locked({key!r}) is above @dramatiq.actor: put it below, on the function"
            )
        if inspect.iscoroutinefunction(fn):
            # The lock would be released when the coroutine is created, not when it ends.
            raise LockOptionsError(f"@locked({key!r}) cannot wrap the coroutine function {fn!r}")
        bound = options.for_function(fn)

        @functools.wraps(fn)
        def run_locked(*args: P.args, **kwargs: P.kwargs) -> R | None:
            with bound.lock(args, kwargs) as held:
                if not held:
                    return None
                return fn(*args, **kwargs)

        return run_locked

    return decorate
