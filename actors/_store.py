"""The demo application's tables, used by the example actors.

A real app would use its own database; the examples use cronwork's so that
`make run` works with nothing else installed.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)

from services.runtime import engine_for
from services.settings import Settings

metadata = MetaData()

sessions = Table(
    "demo_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

payments = Table(
    "demo_payments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("amount", Numeric(12, 2), nullable=False),
    Column("status", String(16), nullable=False),  # failed | retrying | paid | abandoned
    Column("tries", Integer, nullable=False, default=0),
)

invoices = Table(
    "demo_invoices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account", String(64), nullable=False),
    Column("month", String(7), nullable=False),  # 2026-11
    UniqueConstraint("account", "month"),
)


@lru_cache(maxsize=1)
def engine() -> Engine:
    eng = engine_for(Settings(), pool_size=2)
    metadata.create_all(eng)
    return eng
