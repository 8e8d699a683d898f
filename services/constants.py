"""Every Redis key and message option name cronwork uses, in one place."""

from __future__ import annotations

#: Redis key (after the configured prefix) holding the scheduler lease.
LEASE_KEY = "scheduler:lease"
#: Redis key (after the prefix and a colon, then the instance id) of a live worker: set on
#: every heartbeat with a TTL of ``lost_after``; gone means the worker stopped.
WORKER_KEY = "worker"
#: Redis key (after the prefix and a colon, then the Dramatiq message id) saying where the
#: newest copy of a cronwork message sits in the broker (services/message_refs.py).
MESSAGE_REF_KEY = "msgref"
#: Redis key segment of the locks: a lock named ``k`` lives at ``<prefix>:lock:k``.
LOCK_KEY = "lock"
#: Pub/sub channel segment on which a released lock wakes its waiters:
#: ``<prefix>:lock-released:k``.
LOCK_RELEASED_CHANNEL = "lock-released"
#: Schedule option and actor option (``lock: {key: ..., ttl: ...}``) that runs a job under a lock.
LOCK_OPTION = "lock"
#: Actor option (milliseconds): an ad-hoc run of the actor still running after this long
#: is reported stuck by the watchdog (a schedule says ``max_runtime:`` instead).
MAX_RUNTIME_OPTION = "max_runtime"
#: The ``schedule`` of an actor's ad-hoc runs is this prefix and the actor's name
#: (services/adhoc.py); no schedule name holds a colon, so none can clash with it.
ADHOC_SCHEDULE_PREFIX = "adhoc:"
#: Message option carrying the fire's identity; its presence marks a cronwork message.
FIRE_OPTION = "cronwork"
#: At most this many missed fires of one gap are recorded one by one (the oldest);
#: the rest are counted in the log line.
MAX_MISSED_ROWS = 1000
#: Fires due within this many seconds of now count as on time, not catch-up.
ON_TIME_GRACE_SECONDS = 5.0
