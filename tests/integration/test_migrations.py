"""Alembic migrations produce exactly the schema services.store.tables declares.

On real Postgres (production) and on SQLite (embedded mode): autogenerate finds nothing
to do after ``upgrade head``, and a database migrated step by step is indistinguishable
from one made by ``metadata.create_all`` (procrastinate's check).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from services.store.migrate import downgrade, upgrade
from services.store.tables import metadata
from tests.conftest import scratch_database

CRONWORK_TABLES = set(metadata.tables)


@pytest.fixture
def other_empty_pg_url() -> Iterator[str]:
    """A second empty database, for schema built by create_all."""
    with scratch_database("cw_empty") as url:
        yield url


def engine_for(url: str) -> Iterator[Engine]:
    eng = create_engine(url)
    try:
        yield eng
    finally:
        eng.dispose()


def diff(eng: Engine) -> list[Any]:
    with eng.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(ctx, metadata))


def schema(eng: Engine) -> dict[str, Any]:
    """Tables, columns, keys, indexes and unique constraints, as the database reports them."""
    insp = inspect(eng)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            # Sorted by name: ALTER TABLE ADD COLUMN appends, so physical order is history.
            "columns": sorted(
                (
                    c["name"],
                    str(c["type"]),
                    c["nullable"],
                    str(c.get("default")),
                    bool(c.get("autoincrement")),
                    getattr(c["type"], "timezone", None),
                )
                for c in insp.get_columns(table)
            ),
            "pk": (
                insp.get_pk_constraint(table)["name"],
                insp.get_pk_constraint(table)["constrained_columns"],
            ),
            "fks": sorted(
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    fk.get("options", {}).get("ondelete"),
                )
                for fk in insp.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in insp.get_indexes(table)
            ),
            "uniques": sorted(
                (uq["name"], tuple(uq["column_names"])) for uq in insp.get_unique_constraints(table)
            ),
            "checks": sorted(
                (ck["name"], " ".join(ck["sqltext"].split()))
                for ck in insp.get_check_constraints(table)
            ),
        }
    return out


def alembic_rows(eng: Engine) -> list[str] | None:
    """alembic_version's rows, or None when the table does not exist."""
    if "alembic_version" not in inspect(eng).get_table_names():
        return None
    with eng.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def check_upgrade_matches_models(url: str) -> dict[str, Any]:
    upgrade(url)
    for eng in engine_for(url):
        assert diff(eng) == []
        migrated = schema(eng)
        assert set(migrated) == CRONWORK_TABLES
        assert len(alembic_rows(eng) or []) == 1
        return migrated
    raise AssertionError("unreachable")


def check_down_and_up_again(url: str) -> None:
    downgrade(url)
    for eng in engine_for(url):
        left = set(inspect(eng).get_table_names())
        assert left & CRONWORK_TABLES == set()
        assert left <= {"alembic_version"}
        assert not alembic_rows(eng)
    before = check_upgrade_matches_models(url)
    # Idempotent: running it again (every `cronwork up` does) changes nothing.
    upgrade(url)
    for eng in engine_for(url):
        assert schema(eng) == before


# --- Postgres ----------------------------------------------------------------------------------


def test_postgres_upgrade_matches_models(empty_pg_url: str) -> None:
    migrated = check_upgrade_matches_models(empty_pg_url)
    fires = migrated["cronwork_fires"]
    # The fence itself, spelled out: one row per (schedule, scheduled time).
    assert ("uq_cronwork_fires_schedule_time", ("schedule", "scheduled_for")) in fires["uniques"]
    assert ("ix_cronwork_fires_message_id", ("message_id",), True) in fires["indexes"]
    # The vocabulary is held by the database too.
    assert [name for name, _ in fires["checks"]] == [
        "ck_cronwork_fires_kind",
        "ck_cronwork_fires_status",
    ]
    # One ad-hoc run per idempotency key (services/adhoc.py).
    assert ("uq_cronwork_fires_idempotency_key", ("idempotency_key",), True) in fires["indexes"]
    for eng in engine_for(empty_pg_url):
        types = {c["name"]: c["type"] for c in inspect(eng).get_columns("cronwork_fires")}
        assert str(types["message"]) == "JSONB"
        assert getattr(types["scheduled_for"], "timezone", None) is True
        assert str(types["id"]) == "BIGINT"


def test_postgres_checks_see_a_drifted_schema(empty_pg_url: str) -> None:
    """The comparisons above can fail: a schema changed behind the models' back is caught."""
    upgrade(empty_pg_url)
    for eng in engine_for(empty_pg_url):
        before = schema(eng)
        with eng.begin() as conn:
            conn.execute(text("CREATE INDEX ix_drift ON cronwork_fires (kind)"))
            conn.execute(text("ALTER TABLE cronwork_schedules ALTER COLUMN actor DROP NOT NULL"))
            conn.execute(
                text("ALTER TABLE cronwork_attempts DROP CONSTRAINT ck_cronwork_attempts_status")
            )
        found = diff(eng)
        assert any(d[0] == "remove_index" for d in found)
        assert any(isinstance(d, list) and d[0][0] == "modify_nullable" for d in found)
        assert schema(eng) != before


def test_postgres_migrated_equals_create_all(empty_pg_url: str, other_empty_pg_url: str) -> None:
    upgrade(empty_pg_url)
    for created in engine_for(other_empty_pg_url):
        metadata.create_all(created)
        for migrated in engine_for(empty_pg_url):
            a, b = schema(migrated), schema(created)
            assert set(a) == set(b) == CRONWORK_TABLES
            for table in a:
                assert a[table] == b[table], table


def test_postgres_downgrade_to_base_then_upgrade(empty_pg_url: str) -> None:
    check_upgrade_matches_models(empty_pg_url)
    check_down_and_up_again(empty_pg_url)


def test_postgres_adhoc_runs_down_to_0006_and_up(empty_pg_url: str) -> None:
    """0007 allows kind ``adhoc``; going back to 0006 removes ad-hoc runs (the old CHECK
    cannot hold them) and keeps every other fire."""
    upgrade(empty_pg_url)
    insert = text(
        "INSERT INTO cronwork_fires (schedule, scheduled_for, kind, status, message_id,"
        " message, created_at, updated_at, actor, idempotency_key) VALUES"
        " (:s, now(), :k, 'pending', :m, '{}', now(), now(), :a, :key)"
    )
    for eng in engine_for(empty_pg_url):
        with eng.begin() as conn:
            adhoc = {"s": "adhoc:a", "k": "adhoc", "m": "m1", "a": "a", "key": "k"}
            conn.execute(insert, adhoc)
            daily = {"s": "daily", "k": "scheduled", "m": "m2", "a": None, "key": None}
            conn.execute(insert, daily)
    downgrade(empty_pg_url, "0006")
    for eng in engine_for(empty_pg_url):
        with eng.connect() as conn:
            left = conn.execute(text("SELECT schedule FROM cronwork_fires")).scalars().all()
        assert left == ["daily"]
        assert "actor" not in {c["name"] for c in inspect(eng).get_columns("cronwork_fires")}
    check_upgrade_matches_models(empty_pg_url)


# --- SQLite (embedded mode) --------------------------------------------------------------------


def test_sqlite_upgrade_matches_models_and_create_all(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cronwork.db'}"
    migrated = check_upgrade_matches_models(url)
    for created in engine_for(f"sqlite:///{tmp_path / 'created.db'}"):
        metadata.create_all(created)
        assert schema(created) == migrated
    check_down_and_up_again(url)
