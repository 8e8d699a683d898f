"""One typed Settings object, read from ``CRONWORK_*`` variables in the entry point only."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: A number of seconds: finite, and within bounds a deployment can mean.
Seconds = Annotated[float, Field(allow_inf_nan=False)]
#: One year, the longest interval any setting may name.
YEAR = 365 * 86400.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
#: Instance ids go into columns of 200 characters with prefixes ("cli:", "-<pid>").
MAX_NAME_CHARS = 100


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Settings(BaseSettings):
    """cronwork's configuration. Secrets are ``SecretStr`` so they never print."""

    # An empty variable (``CRONWORK_DATABASE_URL=`` in a compose file) means "not set".
    model_config = SettingsConfigDict(env_prefix="CRONWORK_", extra="ignore", env_ignore_empty=True)

    #: Postgres URL; unset means an embedded SQLite file under ``data_dir``.
    database_url: SecretStr | None = None
    #: Redis URL; unset means the in-memory broker and a local lease (one process only).
    redis_url: SecretStr | None = None
    schedules_file: Path = Path("schedules.yaml")
    data_dir: Path = Path(".cronwork")
    #: Seconds a leader's lease lives without renewal; renewed about every ttl/3.
    lease_ttl: Seconds = Field(default=10.0, ge=0.5, le=3600)
    #: Redis key prefix for the lease and anything else cronwork keeps in Redis.
    redis_prefix: str = "cronwork"
    instance_id: str = Field(default_factory=_default_instance_id)
    #: Pending fires older than this are re-sent by the leader.
    resend_after: Seconds = Field(default=5.0, ge=0.1, le=86400)
    #: Workers write a heartbeat this often; the watchdog reads it.
    heartbeat_interval: Seconds = Field(default=5.0, ge=0.1, le=3600)
    #: Touched by every worker process each heartbeat; `cronwork worker --check` and the
    #: worker's /healthz read its age. /tmp: writable under a read-only root filesystem.
    heartbeat_file: Path = Path("/tmp/cronwork-worker.heartbeat")
    #: /healthz, /readyz and /metrics; 0 turns the HTTP server off.
    http_port: int = Field(default=8080, ge=0, le=65535)
    #: All interfaces by default: kubelet and Prometheus reach the pod by its IP.
    http_host: str = "0.0.0.0"
    log_level: str = "INFO"
    log_format: str = "text"
    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    sentry_release: str | None = None
    slack_webhook_url: SecretStr | None = None
    #: Days of fire and attempt history kept; 0 keeps everything.
    retention_days: Seconds = Field(default=30.0, ge=0, le=36500)
    #: Days of ad-hoc runs kept (services/adhoc.py): longer by default, as they are often
    #: the audit trail of billing or exports; 0 keeps everything. An idempotency key is
    #: free again once its run is deleted.
    adhoc_retention_days: Seconds = Field(default=90.0, ge=0, le=36500)
    #: Seconds between two watchdog passes on the lease holder (services/watch/).
    watchdog_interval: Seconds = Field(default=30.0, ge=0.1, le=86400)
    #: Seconds between reminders while an incident stays open (repeats are folded).
    alert_reminder: Seconds = Field(default=3600.0, ge=0.1, le=YEAR)
    #: A running attempt whose worker has not heartbeaten for this long is lost;
    #: unset means 3 x heartbeat_interval.
    lost_after: Seconds | None = Field(default=None, ge=0.1, le=YEAR)
    #: Fires still pending this many seconds after they were written are alerted.
    never_enqueued_after: Seconds = Field(default=60.0, ge=0.1, le=YEAR)
    #: Serve the dashboard beside /healthz on `scheduler` and `up` (`web` always does).
    dashboard: bool = True
    #: The dashboard's admin token (may trigger, pause, resume, re-run). Unset: a random
    #: one is made at start and a login URL with it is printed once.
    dashboard_token: SecretStr | None = None
    #: An optional second token that may only look.
    dashboard_readonly_token: SecretStr | None = None

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value.lower() not in LOG_FORMATS:
            raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
        return value.lower()

    @field_validator("instance_id", "redis_prefix")
    @classmethod
    def _name(cls, value: str) -> str:
        if not 1 <= len(value) <= MAX_NAME_CHARS or not value.isprintable() or " " in value:
            raise ValueError(f"must be 1-{MAX_NAME_CHARS} printable characters without spaces")
        return value

    @property
    def lost_after_seconds(self) -> float:
        """How long a worker may go without a heartbeat before it counts as stopped."""
        return self.lost_after or 3 * self.heartbeat_interval

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: single-process mode with in-memory broker."""
        return self.redis_url is None

    def database_url_value(self) -> str:
        """The URL every reader connects with: ``postgres://`` and ``postgresql://`` as
        ``postgresql+psycopg2://`` (see ``normalize_database_url``)."""
        if self.database_url is not None:
            # Imported on call: importing settings (every module does) stays free of SQLAlchemy.
            from services.store.engines import normalize_database_url

            return normalize_database_url(self.database_url.get_secret_value())
        path = (self.data_dir / "cronwork.sqlite3").resolve()
        return f"sqlite:///{path}"

    def redis_url_value(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url is not None else None


def describe(error: ValidationError) -> str:
    """One line naming each bad variable and what it needs, never the value given.

    pydantic's own text spans lines and repeats the input, which may be a password.
    """
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        name = "CRONWORK_" + "_".join(str(part) for part in item["loc"]).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}: {message}")
    return "; ".join(parts)
