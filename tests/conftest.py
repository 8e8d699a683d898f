"""Shared fixtures: real Postgres and Redis, isolated per test.

A template database is migrated once per session and cloned per test (fast and
isolated); each test gets its own Redis key prefix. Under ``CI=true`` a missing
server fails the test; elsewhere it skips with a loud reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import pytest
import redis
from sqlalchemy import Engine

from services.store.engines import make_engine
from services.store.migrate import upgrade

#: Server URLs without a database; override to point the suite elsewhere.
PG_SERVER = os.environ.get("CRONWORK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("CRONWORK_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by its folder: ``-m unit``, ``-m integration``, ``-m acceptance``."""
    for item in items:
        folder = item.path.parent.name
        if folder in ("unit", "integration", "acceptance"):
            item.add_marker(getattr(pytest.mark, folder))


def require(ok: bool, what: str) -> None:
    """Fail under CI, skip loudly elsewhere, when a real server the test needs is missing."""
    if ok:
        return
    message = f"{what} is not reachable: this test needs the real server"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(f"!!! SKIPPED: {message} !!!")


def _pg_admin() -> psycopg2.extensions.connection | None:
    try:
        conn = psycopg2.connect(f"{PG_SERVER}/postgres", connect_timeout=3)
    except psycopg2.OperationalError:
        return None
    conn.autocommit = True
    return conn


def sa_url(database: str) -> str:
    return f"{PG_SERVER.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{database}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    admin = _pg_admin()
    require(admin is not None, f"PostgreSQL at {PG_SERVER}")
    assert admin is not None
    name = f"cw_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    upgrade(sa_url(name))
    yield name
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@contextmanager
def scratch_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A database of this test's own (a clone of ``template`` if given), dropped after."""
    admin = _pg_admin()
    require(admin is not None, f"PostgreSQL at {PG_SERVER}")
    assert admin is not None
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"{clone}')
    try:
        yield sa_url(name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated database for this test (cloned from the template)."""
    with scratch_database("cw", pg_template) as url:
        yield url


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A database with no schema at all (for migration tests)."""
    with scratch_database("cw_empty") as url:
        yield url


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    yield eng
    eng.dispose()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted after."""
    client = redis.Redis.from_url(REDIS_SERVER, socket_timeout=3)
    try:
        client.ping()
        up = True
    except redis.RedisError:
        up = False
    require(up, f"Redis at {REDIS_SERVER}")
    prefix = f"cwtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def redis_client(redis_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_SERVER)
    yield client
    client.close()
