"""Redis keys owned by a random token: the primitive under the scheduler lease and the locks.

A key is taken with ``SET key value NX PX ttl``, where the value is a JSON object carrying
a fresh random token and who took it. Only a caller presenting that exact value may
extend or delete the key, each by one atomic Lua compare-and-act, so an owner whose key
expired and was taken by someone else can neither keep nor free the new owner's key.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import redis

from services.timeutil import iso, utcnow

#: Compare-and-pexpire: only the owner's exact value may extend the key.
EXTEND_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
#: Compare-and-delete: only the owner's exact value may delete the key.
DELETE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def new_value(**owner: str) -> str:
    """A value no one else will ever write: a random token, ``owner``'s fields, the time."""
    return json.dumps({"token": secrets.token_hex(16), **owner, "since": iso(utcnow())})


def read_value(raw: bytes | str | None) -> dict[str, Any] | None:
    """The fields of a value written by :func:`new_value`; None if absent or foreign."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class OwnedKeys:
    """Take, extend and delete token-owned keys on one Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._extend = client.register_script(EXTEND_SCRIPT)
        self._delete = client.register_script(DELETE_SCRIPT)

    def take(self, key: str, value: str, ttl_ms: int) -> bool:
        """``SET NX PX``: True if the key was free and is now ``value``'s."""
        return bool(self.client.set(key, value, nx=True, px=ttl_ms))

    def extend(self, key: str, value: str, ttl_ms: int) -> bool:
        """Reset the key's expiry to ``ttl_ms`` if it is still ``value``'s."""
        return bool(self._extend(keys=[key], args=[value, ttl_ms]))

    def delete(self, key: str, value: str) -> bool:
        """Delete the key if it is still ``value``'s; False if it expired or changed hands."""
        return bool(self._delete(keys=[key], args=[value]))
