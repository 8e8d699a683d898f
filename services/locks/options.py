"""What a lock is made of: its key (a template over the job's arguments), TTL and busy policy.

:class:`LockOptions` is the one value behind ``@locked(...)`` and the ``lock:`` option of
schedules.yaml and of actors sent from code, so all three validate and template alike.
"""

from __future__ import annotations

import inspect
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from services.errors import DurationError, LockOptionsError
from services.schedules.durations import parse_duration

if TYPE_CHECKING:
    from services.locks.lock import Lock

#: A duration as callers give it: seconds, a timedelta, or a string like ``"5m"``.
Duration = float | int | str | timedelta

#: The argument name a template field starts with: ``{customer.id}`` and ``{items[0]}``
#: both name ``customer`` / ``items``.
_FIELD_ROOT = re.compile(r"[^.\[]*")


class OnBusy(StrEnum):
    """What to do when someone else holds the lock."""

    #: Do not run the work (inside a cronwork fire, the attempt is recorded ``skipped``).
    SKIP = "skip"
    #: Wait until the lock is free, up to a timeout, then raise LockBusy.
    WAIT = "wait"
    #: Raise LockBusy at once.
    RAISE = "raise"


def to_seconds(value: Duration, what: str) -> float:
    """``value`` in seconds (positive), from seconds, a timedelta or a duration string."""
    if isinstance(value, str):
        try:
            seconds = parse_duration(value).total_seconds()
        except DurationError as exc:
            raise LockOptionsError(f"lock {what}: {exc}") from None
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise LockOptionsError(
            f"lock {what} must be seconds or a duration like '30s' or '5m', not {value!r}"
        )
    if not seconds > 0:  # also refuses NaN
        raise LockOptionsError(f"lock {what} must be greater than zero, not {value!r}")
    if seconds < 0.001:
        raise LockOptionsError(f"lock {what} {value!r} is shorter than a millisecond")
    return seconds


def checked(
    ttl: Duration, on_busy: OnBusy | str, timeout: Duration | None, extend: bool
) -> tuple[float, OnBusy, float | None, bool]:
    """TTL, busy policy, timeout and extension validated: seconds, OnBusy, seconds, bool."""
    try:
        policy = OnBusy(on_busy)
    except ValueError:
        choices = ", ".join(p.value for p in OnBusy)
        raise LockOptionsError(f"lock on_busy must be one of {choices}, not {on_busy!r}") from None
    if timeout is not None and policy is not OnBusy.WAIT:
        raise LockOptionsError("lock timeout only applies with on_busy: wait")
    if not isinstance(extend, bool):
        raise LockOptionsError(f"lock extend must be true or false, not {extend!r}")
    timeout_s = None if timeout is None else to_seconds(timeout, "timeout")
    return to_seconds(ttl, "ttl"), policy, timeout_s, extend


def template_names(template: object) -> frozenset[str]:
    """The argument names a key template uses; LockOptionsError if it is not a valid one."""
    if not isinstance(template, str) or not template.strip():
        raise LockOptionsError(f"lock key must be a non-empty string, not {template!r}")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise LockOptionsError(f"lock key {template!r} is not a valid template: {exc}") from None
    names = set()
    for name in fields:
        root = _FIELD_ROOT.match(name)
        root_name = root.group(0) if root else ""
        if not root_name.isidentifier():
            raise LockOptionsError(
                f"lock key {template!r}: {{{name}}} must name an argument, "
                "e.g. 'invoice-{customer_id}'"
            )
        names.add(root_name)
    return frozenset(names)


def _parameter_names(signature: inspect.Signature) -> list[str]:
    return list(signature.parameters)


def _takes_any_keyword(signature: inspect.Signature) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


@dataclass(frozen=True)
class LockOptions:
    """A lock's key template, TTL, busy policy and extension; build with :meth:`of`."""

    #: The key, a ``str.format`` template over the job's argument names.
    key: str
    #: Seconds the lock lives unless extended; how long a dead holder blocks everyone.
    ttl: float
    on_busy: OnBusy = OnBusy.SKIP
    #: Seconds to wait when ``on_busy`` is ``wait``; None means one TTL.
    timeout: float | None = None
    #: Extend the lock every ttl/3 while the work runs.
    extend: bool = True
    #: The function whose arguments fill the key (see :meth:`for_function`).
    signature: inspect.Signature | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        key: str,
        *,
        ttl: Duration,
        on_busy: OnBusy | str = OnBusy.SKIP,
        timeout: Duration | None = None,
        extend: bool = True,
    ) -> LockOptions:
        """Validated options; LockOptionsError says what is wrong."""
        template_names(key)
        ttl_s, policy, timeout_s, extend = checked(ttl, on_busy, timeout, extend)
        return cls(key=key, ttl=ttl_s, on_busy=policy, timeout=timeout_s, extend=extend)

    @classmethod
    def from_mapping(cls, data: object) -> LockOptions:
        """From a ``lock:`` mapping (schedules.yaml, actor options): ``{key, ttl, on_busy,
        timeout, extend}``, key and ttl required, unknown keys refused."""
        if not isinstance(data, Mapping):
            raise LockOptionsError(
                f"lock must be a mapping like {{key: 'sync-{{region}}', ttl: 10m}}, not {data!r}"
            )
        known = ("key", "ttl", "on_busy", "timeout", "extend")
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise LockOptionsError(
                f"lock: unknown option(s) {', '.join(unknown)} (known: {', '.join(known)})"
            )
        missing = [k for k in ("key", "ttl") if k not in data]
        if missing:
            raise LockOptionsError(f"lock: {' and '.join(missing)} required")
        return cls.of(
            data["key"],
            ttl=data["ttl"],
            on_busy=data.get("on_busy", OnBusy.SKIP),
            timeout=data.get("timeout"),
            extend=data.get("extend", True),
        )

    def for_function(self, fn: Callable[..., Any]) -> LockOptions:
        """These options bound to ``fn``'s parameters: positional arguments then fill the
        key by name. A key naming no parameter of ``fn`` is refused here, not at call time."""
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise LockOptionsError(f"lock key {self.key!r}: cannot read {fn!r}: {exc}") from None
        unknown = sorted(template_names(self.key) - set(signature.parameters))
        if unknown and not _takes_any_keyword(signature):
            name = getattr(fn, "__qualname__", repr(fn))
            raise LockOptionsError(
                f"lock key {self.key!r} names {', '.join(unknown)}, not an argument of "
                f"{name}({', '.join(_parameter_names(signature))})"
            )
        return replace(self, signature=signature)

    def key_for(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> str:
        """The key for one call: the template filled from the call's arguments (by name;
        positional ones too once bound with :meth:`for_function`)."""
        kwargs = dict(kwargs or {})
        if self.signature is None:
            values = kwargs
        else:
            bound = self.signature.bind(*args, **kwargs)  # TypeError, as the call itself would
            bound.apply_defaults()
            values = dict(bound.arguments)
            for param in self.signature.parameters.values():
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    values.update(values.pop(param.name, {}))
        missing = sorted(template_names(self.key) - set(values))
        if missing:
            raise LockOptionsError(
                f"lock key {self.key!r} names {', '.join(missing)}, which this call does not pass"
                + (" by name" if self.signature is None and args else "")
            )
        try:
            return self.key.format(**values)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise LockOptionsError(f"lock key {self.key!r}: cannot fill it in: {exc}") from None

    def lock(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Lock:
        """An (unacquired) lock for one call: a context manager, or acquire()/release()."""
        from services.locks.lock import Lock

        return Lock(
            self.key_for(args, kwargs),
            ttl=self.ttl,
            on_busy=self.on_busy,
            timeout=self.timeout,
            extend=self.extend,
        )
