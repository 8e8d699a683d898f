"""A lock holder in a process of its own, for tests/integration/test_lock_processes.py.

``python lock_holder.py REDIS_URL PREFIX KEY TTL MODE [ROUNDS]``; it reports on the
Redis list ``<PREFIX>:test:reports`` and takes orders from ``<PREFIX>:test:go:<round>``
(and ``...:go:done``), so the test can line several holders up without sleeping:

- ``race``: each round, report ``ready``, wait for ``go``, try the lock with
  ``on_busy=skip``; the winner reports ``ran`` and holds until told ``done``, a loser
  reports ``skipped``. A holder reports its next ``ready`` only after its release.
- ``hold``: take the lock (extended every ttl/3), report ``held``, sleep until killed.

Each report is ``<what> <round> <pid>``.
"""

from __future__ import annotations

import os
import sys
import time

import redis

from services.locks import Lock, configure


def main(url: str, prefix: str, key: str, ttl: float, mode: str, rounds: int) -> None:
    client = redis.Redis.from_url(url)
    reports, orders = f"{prefix}:test:reports", f"{prefix}:test:go"
    pid = os.getpid()
    configure(redis_url=url, prefix=prefix, instance_id=f"holder-{pid}")
    if mode == "hold":
        with Lock(key, ttl=ttl):
            client.rpush(reports, f"held 0 {pid}")
            time.sleep(600)
    for round_ in range(rounds):
        client.rpush(reports, f"ready {round_} {pid}")
        client.blpop([f"{orders}:{round_}"], timeout=60)
        with Lock(key, ttl=ttl, on_busy="skip") as held:
            if not held:
                client.rpush(reports, f"skipped {round_} {pid}")
                continue
            client.rpush(reports, f"ran {round_} {pid}")
            client.blpop([f"{orders}:done"], timeout=60)


if __name__ == "__main__":
    url, prefix, key, ttl, mode = sys.argv[1:6]
    main(url, prefix, key, float(ttl), mode, int(sys.argv[6]) if len(sys.argv) > 6 else 1)
