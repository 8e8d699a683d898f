"""Tracked ad-hoc runs: send any actor from application code as a fire of its own.

::

    from services.adhoc import send_tracked

    run = send_tracked("send_invoice", "acme", key="invoice-acme-2026-11")
    if run.duplicate:
        print(f"already sent as fire {run.fire_id} ({run.status})")

It takes the scheduled fires' path (docs/design.md, sending): the fire row (kind
``adhoc``), holding the message id and the whole message, is written first; then the
message is sent and the row marked ``enqueued``. A send that fails leaves the row
``pending`` and the leader re-sends it from the row. A worker tracks it like any fire:
every attempt a row, retries and time limits (the actor's own options, else cronwork's
defaults), lost-worker re-sends, the watchdog and failure alerts.

The row's ``schedule`` is ``adhoc:<actor>`` (shortened with a hash past 64 characters;
``actor`` holds the full name) and its scheduled time the moment it is written. Two runs
of one actor written in the same microsecond would meet on the fence's (schedule,
scheduled_for) constraint: the later one moves on by a microsecond and tries again.

An idempotency key is unique among all fires (a partial unique index), not per actor:
a second send of a key already held writes nothing, sends nothing, and learns which fire
holds the key and how it stands. Retention frees a key with its fire.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import dramatiq
from dramatiq.errors import ActorNotFound
from sqlalchemy import Engine, select

from services.constants import ADHOC_SCHEDULE_PREFIX, FIRE_OPTION, MAX_RUNTIME_OPTION
from services.errors import CronworkError
from services.fire_message import FireOptions, ms
from services.scheduler.dispatch import Dispatcher
from services.schedules.spec import DEFAULT_MAX_BACKOFF, DEFAULT_MAX_RETRIES, DEFAULT_MIN_BACKOFF
from services.store.engines import upsert
from services.store.fence import Fence, Fire
from services.store.tables import fires
from services.timeutil import utcnow
from services.vocabulary import FireKind, FireStatus

logger = logging.getLogger(__name__)

#: ``fires.schedule`` and ``fires.idempotency_key`` lengths.
SCHEDULE_LENGTH = 64
KEY_LENGTH = 200
#: Key in the message's ``cronwork`` option: the actor's ``max_runtime`` (milliseconds).
RUNTIME_KEY = "max_runtime_ms"
#: Microseconds a run moves on when its actor already has a run at that very time.
_MAX_BUMPS = 1000
_MICROSECOND = timedelta(microseconds=1)


class UnknownActor(CronworkError):
    """No such actor on the broker."""


class AdhocInputError(CronworkError, ValueError):
    """Invalid ad-hoc run."""


@dataclass(frozen=True)
class AdhocRun:
    """What ``send_tracked`` did. On a duplicate, the fire is the one holding the key."""

    fire_id: int
    message_id: str
    actor: str
    key: str | None
    #: True: the key was held already; nothing was written or sent by this call.
    duplicate: bool
    #: The fire's status as this call left it (``enqueued``, or ``pending`` when the
    #: broker was not reached: the leader re-sends it); on a duplicate, the holder's.
    status: FireStatus

    @property
    def enqueued(self) -> bool:
        return not self.duplicate and self.status == FireStatus.ENQUEUED


def adhoc_schedule(actor_name: str) -> str:
    """The ``schedule`` of an actor's ad-hoc runs: ``adhoc:<actor>``, fitting 64 characters."""
    name = ADHOC_SCHEDULE_PREFIX + actor_name
    if len(name) <= SCHEDULE_LENGTH:
        return name
    digest = hashlib.sha256(actor_name.encode()).hexdigest()[:9]
    return f"{name[: SCHEDULE_LENGTH - 10]}~{digest}"


def send_tracked(
    actor_or_name: dramatiq.Actor[Any, Any] | str,
    *args: Any,
    key: str | None = None,
    broker: dramatiq.Broker | None = None,
    engine: Engine | None = None,
    **kwargs: Any,
) -> AdhocRun:
    """Send one tracked run of an actor (``actor.send(*args, **kwargs)``, but tracked).

    ``key``: an idempotency key; a run already holding it makes this a duplicate. An
    actor keyword argument named ``key``, ``broker`` or ``engine``: use
    :func:`send_tracked_with`. ``broker``: the global Dramatiq broker by default;
    ``engine``: the configured database (CRONWORK_DATABASE_URL) by default.
    """
    return send_tracked_with(actor_or_name, args, kwargs, key=key, broker=broker, engine=engine)


def send_tracked_with(
    actor_or_name: dramatiq.Actor[Any, Any] | str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    broker: dramatiq.Broker | None = None,
    engine: Engine | None = None,
    who: str | None = None,
    send: bool = True,
) -> AdhocRun:
    """:func:`send_tracked` with the actor's arguments as they are. ``who``: recorded as
    the fire's ``fired_by`` (default ``host:pid``). ``send=False`` only writes the row: the
    leader sends it (``cronwork run`` next to an embedded ``cronwork up``)."""
    actor = find_actor(actor_or_name, broker)
    broker = broker or actor.broker
    engine = engine or _default_engine()
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= KEY_LENGTH):
        raise AdhocInputError(f"the key must be a string of 1-{KEY_LENGTH} characters")
    args, kwargs = list(args), dict(kwargs or {})
    try:
        json.dumps([args, kwargs], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AdhocInputError(f"the arguments of an ad-hoc run must be JSON: {exc}") from None
    fence = Fence(engine, (who or f"{socket.gethostname()}:{os.getpid()}")[:200])
    won = _write(fence, actor, args, kwargs, key)
    if isinstance(won, AdhocRun):
        logger.info(
            "ad-hoc run of %s not sent: key %r is held by fire %d (%s)",
            actor.actor_name,
            key,
            won.fire_id,
            won.status.value,
            extra={"action": "adhoc_duplicate", "fire_id": won.fire_id},
        )
        return won
    sent = Dispatcher(broker, fence).send([won]) if send else 0
    status = FireStatus.ENQUEUED if sent == 1 else FireStatus.PENDING
    return AdhocRun(won.id, won.message_id, actor.actor_name, key, False, status)


def find_actor(
    actor_or_name: dramatiq.Actor[Any, Any] | str, broker: dramatiq.Broker | None = None
) -> dramatiq.Actor[Any, Any]:
    if not isinstance(actor_or_name, str):
        return actor_or_name
    broker = broker or dramatiq.get_broker()
    try:
        return broker.get_actor(actor_or_name)
    except ActorNotFound:
        known = sorted(broker.get_declared_actors())
        listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        raise UnknownActor(
            f"no actor named '{actor_or_name}' (known: {listed or 'none'})"
        ) from None


def adhoc_message(
    actor: dramatiq.Actor[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    at: datetime,
    key: str | None,
) -> dict[str, Any]:
    """Everything needed to send (and re-send) an ad-hoc run, as a fire's ``message``.

    Retries and time limit are the actor's own options, written into the message (a
    re-send from the row needs no actor), with cronwork's schedule defaults otherwise;
    its ``max_runtime`` (milliseconds) too, for the watchdog.
    """
    o = actor.options
    fire = FireOptions(adhoc_schedule(actor.actor_name), at, FireKind.ADHOC, key=key).to_option()
    if o.get(MAX_RUNTIME_OPTION) is not None:
        fire[RUNTIME_KEY] = int(o[MAX_RUNTIME_OPTION])  # the watchdog's "stuck" past it
    options: dict[str, Any] = {
        "max_retries": int(o.get("max_retries", DEFAULT_MAX_RETRIES)),
        "min_backoff": int(o.get("min_backoff", ms(DEFAULT_MIN_BACKOFF))),
        "max_backoff": int(o.get("max_backoff", ms(DEFAULT_MAX_BACKOFF))),
        FIRE_OPTION: fire,
    }
    if o.get("time_limit") is not None:
        options["time_limit"] = int(o["time_limit"])
    return {
        "queue_name": actor.queue_name,
        "actor_name": actor.actor_name,
        "args": args,
        "kwargs": kwargs,
        "options": options,
        "jitter_ms": 0,
    }


def _write(
    fence: Fence,
    actor: dramatiq.Actor[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    key: str | None,
) -> Fire | AdhocRun:
    """Write the run's row (a Fire to send), or find the fire holding its key."""
    engine = fence.engine
    schedule = adhoc_schedule(actor.actor_name)
    # No conflict target: the key's index and the fence's constraint both say "not yours".
    stmt = upsert(engine, fires.name).on_conflict_do_nothing().returning(fires.c.id)
    now = utcnow()
    for bump in range(_MAX_BUMPS):
        at = now + bump * _MICROSECOND
        message = adhoc_message(actor, args, kwargs, at, key)
        message_id = str(uuid.uuid4())
        values = {
            "schedule": schedule,
            "scheduled_for": at,
            "kind": FireKind.ADHOC,
            "status": FireStatus.PENDING,
            "message_id": message_id,
            "message": message,
            "fired_by": fence.instance_id,
            "created_at": now,
            "actor": actor.actor_name[:200],
            "idempotency_key": key,
        }
        with engine.begin() as conn:
            fire_id = conn.execute(stmt, values).scalar()
            if fire_id is not None:
                return Fire(fire_id, schedule, at, message_id, message)
            if key is not None:
                holder = conn.execute(
                    select(fires.c.id, fires.c.message_id, fires.c.status, fires.c.actor).where(
                        fires.c.idempotency_key == key
                    )
                ).first()
                if holder is not None:
                    return AdhocRun(
                        holder.id,
                        holder.message_id,
                        holder.actor or actor.actor_name,
                        key,
                        True,
                        FireStatus(holder.status),
                    )
        # Another run of this actor holds this very microsecond: take the next one.
    raise CronworkError(f"could not record an ad-hoc run of '{actor.actor_name}'")


@cache
def _default_engine() -> Engine:
    from services.runtime import engine_for
    from services.settings import Settings

    return engine_for(Settings())
