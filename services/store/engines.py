"""Engines for Postgres (production) and SQLite (embedded single-process mode)."""

from __future__ import annotations

import os
import sqlite3
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import NullPool

from services.errors import CronworkError
from services.store.tables import metadata

#: Postgres through psycopg2, the driver cronwork installs.
POSTGRES_DRIVER = "postgresql+psycopg2"
#: The schemes hosting providers hand out. SQLAlchemy 2.1 reads a bare ``postgresql`` as
#: psycopg 3 (not installed) and does not know ``postgres`` at all.
_BARE_POSTGRES = frozenset({"postgres", "postgresql"})


class DatabaseUrlError(CronworkError):
    """CRONWORK_DATABASE_URL: the password holds a raw '@'; write it percent-encoded, as %40."""


def normalize_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` as ``postgresql+psycopg2://``; others as given.

    Only the scheme changes: the rest is kept byte for byte, so a percent-encoded password
    (``p%40ss`` for ``p@ss``) reaches the driver as written, and SQLite paths are untouched.
    A raw ``@`` in a Postgres password is refused: the URL parser would take what follows
    it for the host name, and the driver would print that in its connection error.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.lower().startswith("postgres"):
        return url
    if scheme.lower() in _BARE_POSTGRES:
        url = f"{POSTGRES_DRIVER}://{rest}"
    if "@" in (make_url(url).host or ""):
        raise DatabaseUrlError()
    return url


def make_engine(
    url: str, *, pool_size: int = 5, pre_ping: bool = True, read_only: bool = False
) -> Engine:
    """An engine tuned for cronwork's short transactions.

    ``pre_ping=False`` saves a round trip per transaction on hot paths (the worker's
    tracking writes); after a Postgres restart the first statement on each stale
    connection then fails (and is logged) instead of being retried, and the pool
    reconnects. ``read_only``: for commands that only read (see _read_only_sqlite).
    """
    if url.startswith("sqlite"):
        if read_only:
            return _read_only_sqlite(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options = "-c lock_timeout=10000"
    if read_only:
        options += " -c default_transaction_read_only=on"
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_pre_ping=pre_ping,
        # executemany of UPDATEs (a burst advancing thousands of jobs) in pages, not
        # one round trip per row.
        executemany_mode="values_plus_batch",
        pool_recycle=1800,
        # A statement stuck behind a lock must not wedge the scheduler's loop.
        connect_args={"connect_timeout": 5, "options": options},
    )


def _read_only_sqlite(url: str) -> Engine:
    """The embedded database opened for reading only: never created, never written.

    ``mode=ro`` reads alongside a running ``cronwork up``. On a read-only volume SQLite
    cannot make the shared-memory file a WAL database needs even to read, and
    ``mode=ro`` fails; nobody can be writing there, so ``immutable=1`` (no locks) is
    safe, and is the fallback.
    """
    path = make_url(url).database or ""
    target = "file:" + quote(os.path.abspath(path))

    def connect() -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                f"{target}?mode=ro", uri=True, check_same_thread=False, timeout=30
            )
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
            return conn
        except sqlite3.OperationalError:
            return sqlite3.connect(f"{target}?immutable=1", uri=True, check_same_thread=False)

    return create_engine("sqlite://", creator=connect, poolclass=NullPool)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the CLI read while `cronwork up` writes; busy_timeout waits instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def upsert(engine: Engine, table_name: str) -> postgresql.Insert | sqlite.Insert:
    """A dialect-specific INSERT that supports ON CONFLICT clauses."""
    table = metadata.tables[table_name]
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
