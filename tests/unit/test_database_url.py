"""Database URLs as hosting providers hand them out: ``postgres://``, ``postgresql://``.

SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3 (not installed) and does not
know ``postgres://``; cronwork reads both, and ``postgresql+psycopg2://``, as psycopg2.
Nothing here connects: engines are built, never used.
"""

from __future__ import annotations

import pytest
from sqlalchemy import make_url

from services.settings import Settings
from services.store.engines import DatabaseUrlError, make_engine, normalize_database_url
from services.store.migrate import alembic_config
from services.web.health import Readiness

PSYCOPG2 = "postgresql+psycopg2://"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://cw:pw@db.example.com:5432/app", f"{PSYCOPG2}cw:pw@db.example.com:5432/app"),
        ("postgresql://cw:pw@db.example.com:5432/app", f"{PSYCOPG2}cw:pw@db.example.com:5432/app"),
        ("POSTGRES://cw:pw@db:5432/app", f"{PSYCOPG2}cw:pw@db:5432/app"),
        (f"{PSYCOPG2}cw:pw@db:5432/app", f"{PSYCOPG2}cw:pw@db:5432/app"),
        # What providers add: query strings, other ports, no password, a socket directory.
        (
            "postgres://cw:pw@db:6543/app?sslmode=require&application_name=cronwork",
            f"{PSYCOPG2}cw:pw@db:6543/app?sslmode=require&application_name=cronwork",
        ),
        ("postgresql://cw@db/app", f"{PSYCOPG2}cw@db/app"),
        ("postgresql:///app?host=/var/run/postgresql", f"{PSYCOPG2}/app?host=/var/run/postgresql"),
        ("postgresql://cw:pw@[::1]:5432/app", f"{PSYCOPG2}cw:pw@[::1]:5432/app"),
        # Another driver the user chose is theirs to install.
        ("postgresql+asyncpg://cw:pw@db/app", "postgresql+asyncpg://cw:pw@db/app"),
        # SQLite (embedded mode) is never touched, '@' in a path included.
        (
            "sqlite:////var/lib/cronwork/cronwork.sqlite3",
            "sqlite:////var/lib/cronwork/cronwork.sqlite3",
        ),
        ("sqlite:///odd@name.sqlite3", "sqlite:///odd@name.sqlite3"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_only_the_scheme_changes(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize(
    ("given", "password"),
    [
        ("postgres://cw:p%40ss%2Fw%25rd@db:5432/app", "p@ss/w%rd"),  # percent-encoded
        ("postgresql://cw:100%@db:5432/app", "100%"),  # a raw '%' that encodes nothing
        ("postgresql://cw:a/b:c@db:5432/app", "a/b:c"),
    ],
)
def test_passwords_reach_the_driver_as_written(given: str, password: str) -> None:
    url = make_url(normalize_database_url(given))
    assert (url.drivername, url.password, url.host, url.port, url.database) == (
        "postgresql+psycopg2",
        password,
        "db",
        5432,
        "app",
    )
    # Alembic reads it through ConfigParser, where '%' is special.
    cfg = alembic_config(normalize_database_url(given))
    assert make_url(cfg.get_main_option("sqlalchemy.url") or "").password == password


def test_a_user_name_with_at_is_accepted() -> None:
    # Azure's single-server form: user@server as the user name.
    url = make_url(normalize_database_url("postgres://admin@srv:pw@srv.example.com/app"))
    assert (url.username, url.password, url.host) == ("admin@srv", "pw", "srv.example.com")


@pytest.mark.parametrize(
    "given", ["postgres://cw:p@ss@db:5432/app", "postgresql+psycopg2://cw:s3cr@t@db/app"]
)
def test_a_raw_at_in_the_password_is_refused_without_showing_it(given: str) -> None:
    # Unrefused, the parser would take "ss@db" for the host, and the driver print it.
    with pytest.raises(DatabaseUrlError) as caught:
        normalize_database_url(given)
    message = str(caught.value)
    assert "%40" in message and "CRONWORK_DATABASE_URL" in message
    for fragment in ("p@ss", "ss@db", "s3cr", "t@db"):
        assert fragment not in message


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg2"])
def test_every_reader_of_the_settings_gets_psycopg2(scheme: str) -> None:
    settings = Settings(database_url=f"{scheme}://cw:pw@db.example.com:5432/app", http_port=0)
    assert settings.database_url_value() == f"{PSYCOPG2}cw:pw@db.example.com:5432/app"
    engine = make_engine(settings.database_url_value())  # services.runtime.engine_for
    probe = Readiness(settings)  # /readyz
    try:
        assert engine.dialect.driver == probe.engine.dialect.driver == "psycopg2"
    finally:
        engine.dispose()
        probe.close()
    # `cronwork migrate` and `up` hand Alembic the same URL.
    alembic_url = alembic_config(settings.database_url_value()).get_main_option("sqlalchemy.url")
    assert alembic_url == settings.database_url_value()


def test_no_database_url_means_the_embedded_sqlite_file() -> None:
    settings = Settings(database_url=None, data_dir="/var/lib/cronwork")
    assert settings.database_url_value() == "sqlite:////var/lib/cronwork/cronwork.sqlite3"
