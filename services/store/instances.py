"""Rows in ``cronwork_instances``: who runs, since when, last heartbeat, who leads."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, update

from services.store.engines import upsert
from services.store.tables import instances
from services.timeutil import utcnow


class InstanceRegistry:
    def __init__(self, engine: Engine, instance_id: str, role: str) -> None:
        self.engine = engine
        self.instance_id = instance_id
        self.role = role

    def register(self) -> None:
        now = utcnow()
        values: dict[str, Any] = {
            "instance_id": self.instance_id,
            "role": self.role,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "heartbeat_at": now,
            "leader_since": None,
            "stopped_at": None,
        }
        stmt = upsert(self.engine, instances.name).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["instance_id"],
            set_={k: stmt.excluded[k] for k in values if k != "instance_id"},
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def beat(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.instance_id == self.instance_id)
                .values(heartbeat_at=utcnow(), **values)
            )

    def set_leader(self, since: datetime | None) -> None:
        self.beat(leader_since=since)

    def stop(self) -> None:
        self.beat(stopped_at=utcnow(), leader_since=None)
