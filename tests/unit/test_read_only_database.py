"""Read commands open the database read-only and never create one (issue 9.11)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError

from services.runtime import SchemaMissing, engine_for, ensure_schema
from services.settings import Settings
from services.store.migrate import upgrade
from services.store.tables import incidents
from services.vocabulary import IncidentKind


def embedded(folder: Path) -> Settings:
    return Settings(data_dir=folder / ".cronwork")


def test_reading_an_empty_folder_creates_nothing(tmp_path: Path) -> None:
    # main: `cronwork status` in an empty folder created .cronwork/cronwork.sqlite3.
    settings = embedded(tmp_path)
    with pytest.raises(SchemaMissing, match=r"no cronwork database at .*cronwork\.sqlite3"):
        engine_for(settings, read_only=True)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def migrated(tmp_path: Path) -> Settings:
    settings = embedded(tmp_path)
    settings.data_dir.mkdir()
    upgrade(settings.database_url_value())
    return settings


def test_a_read_only_engine_reads_and_cannot_write(migrated: Settings) -> None:
    engine = engine_for(migrated, read_only=True)
    ensure_schema(migrated, engine, migrate=False)
    with engine.connect() as conn:
        assert conn.execute(select(incidents)).all() == []
    with pytest.raises(OperationalError, match="readonly"), engine.begin() as conn:
        conn.execute(
            insert(incidents).values(kind=IncidentKind.FAILED, schedule="x", count=1, details={})
        )
    engine.dispose()


def test_a_database_whose_folder_cannot_be_written_is_still_read(
    migrated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a read-only volume SQLite cannot create the WAL's shared-memory file, and
    # `mode=ro` fails (as root, permissions do not stop us: simulate the failure).
    real_connect = sqlite3.connect
    opened: list[str] = []

    def connect(target: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        opened.append(target)
        if "mode=ro" in target:
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", connect)
    engine = engine_for(migrated, read_only=True)
    with engine.connect() as conn:
        assert conn.execute(select(incidents)).all() == []
    assert [t.rsplit("?", 1)[1] for t in opened] == ["mode=ro", "immutable=1"]
    engine.dispose()
