"""Read commands open Postgres read-only (issue 9.11): they can never change a thing."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import InternalError

from services.store.engines import make_engine
from services.store.tables import incidents
from services.vocabulary import IncidentKind


def test_a_read_only_postgres_engine_reads_and_cannot_write(pg_url: str) -> None:
    engine = make_engine(pg_url, read_only=True)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(incidents)).all() == []
        with pytest.raises(InternalError, match="read-only transaction"), engine.begin() as conn:
            conn.execute(
                insert(incidents).values(
                    kind=IncidentKind.FAILED, schedule="x", count=1, details={}
                )
            )
    finally:
        engine.dispose()
