"""One typed Settings object, read from ``CRONWORK_*`` variables in the entry point only."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Settings(BaseSettings):
    """cronwork's configuration. Secrets are ``SecretStr`` so they never print."""

    model_config = SettingsConfigDict(env_prefix="CRONWORK_", extra="ignore")

    #: Postgres URL; unset means an embedded SQLite file under ``data_dir``.
    database_url: SecretStr | None = None
    #: Redis URL; unset means the in-memory broker and a local lease (one process only).
    redis_url: SecretStr | None = None
    schedules_file: Path = Path("schedules.yaml")
    data_dir: Path = Path(".cronwork")
    #: Seconds a leader's lease lives without renewal; renewed about every ttl/3.
    lease_ttl: float = Field(default=10.0, gt=0)
    #: Redis key prefix for the lease and anything else cronwork keeps in Redis.
    redis_prefix: str = "cronwork"
    instance_id: str = Field(default_factory=_default_instance_id)
    #: Pending fires older than this are re-sent by the leader.
    resend_after: float = Field(default=5.0, gt=0)
    #: Workers write a heartbeat this often; the watchdog reads it.
    heartbeat_interval: float = Field(default=5.0, gt=0)
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
    #: Seconds between two watchdog passes on the lease holder (services/watchdog.py).
    #: Days of fire and attempt history kept; 0 keeps everything.
    retention_days: float = Field(default=30.0, ge=0)
    watchdog_interval: float = Field(default=30.0, gt=0)
    #: Seconds between reminders while an incident stays open (repeats are folded).
    alert_reminder: float = Field(default=3600.0, gt=0)
    #: A running attempt whose worker has not heartbeaten for this long is lost;
    #: unset means 3 x heartbeat_interval.
    lost_after: float | None = Field(default=None, gt=0)
    #: Fires still pending this many seconds after they were written are alerted.
    never_enqueued_after: float = Field(default=60.0, gt=0)
    #: Serve the dashboard beside /healthz on `scheduler` and `up` (`web` always does).
    dashboard: bool = True
    #: The dashboard's admin token (may trigger, pause, resume, re-run). Unset: a random
    #: one is made at start and a login URL with it is printed once.
    dashboard_token: SecretStr | None = None
    #: An optional second token that may only look.
    dashboard_readonly_token: SecretStr | None = None

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
