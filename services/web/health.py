"""``/healthz``, ``/readyz`` and ``/metrics`` for the scheduler, the worker and ``up``.

Routes of the web app (services/web/app.py, uvicorn in a daemon thread, see
services/web/server.py) on ``CRONWORK_HTTP_PORT`` (0 turns it off) and
``CRONWORK_HTTP_HOST`` (default ``0.0.0.0``: the kubelet and Prometheus reach a pod by its
IP; set ``127.0.0.1`` on a laptop), beside the dashboard where the process serves one. They
need no token (probes and Prometheus have none) and nothing served here carries a secret:
the bodies name what failed and the exception type, never a URL or an error message.

What each probe checks:

- scheduler ``/healthz`` (liveness): ``SchedulerService.health()`` — the main loop passed
  within 30 s and, while leading, APScheduler's thread is alive and its loop passed within
  30 s. A database or Redis outage does not fail it (that is readiness; a restart would
  not help).
- worker ``/healthz`` and ``cronwork worker --check``: the heartbeat file that every
  worker process touches each ``heartbeat_interval`` is younger than 3 intervals.
- ``/readyz`` (both): ``SELECT 1`` on Postgres (a dedicated connection per probe, not the
  service's pool, so a busy pool cannot fail it) and ``PING`` on Redis when configured,
  each with a 2 s timeout.
- ``/metrics``: Prometheus text, see :mod:`services.metrics` (multiprocess aggregation
  in the worker parent).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from services.metrics import MULTIPROC_ENV, exposition_registry
from services.redact import redact
from services.settings import Settings
from services.web.server import HttpServer

if TYPE_CHECKING:
    from services.web.dashboard import Dashboard

logger = logging.getLogger(__name__)

#: A probe answers (ok, one line saying why).
Check = Callable[[], tuple[bool, str]]

#: Seconds each readiness dependency may take before it counts as down (the chart's
#: probes time out after 5 s).
READY_TIMEOUT = 2.0
#: The worker heartbeat is fresh while younger than this many heartbeat intervals.
HEARTBEAT_STALE_AFTER = 3
NO_STORE = {"Cache-Control": "no-store"}


class HealthServer:
    """The web app (probes, metrics and, when given, the dashboard) served from a daemon
    thread until ``stop()`` or process exit."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        live: Check,
        ready: Check,
        dashboard: Dashboard | None = None,
    ) -> None:
        from services.web.app import create_app

        self.live = live
        self.ready = ready
        self.dashboard = dashboard
        self.http = HttpServer(create_app(live, ready, dashboard), host, port)

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> HealthServer:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()


def probe_router(live: Check, ready: Check) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/metrics``: plain text, no token, never cached."""
    router = APIRouter(include_in_schema=False)

    def probe(check: Check) -> PlainTextResponse:
        try:
            ok, why = check()
        except Exception as exc:
            ok, why = False, f"probe error ({type(exc).__name__})"
        body = f"{'ok' if ok else 'fail'}: {why}\n"
        return PlainTextResponse(body, 200 if ok else 503, headers=NO_STORE)

    # Plain `def`: the checks block (SELECT 1, PING), so they run in the thread pool.
    @router.get("/healthz")
    def healthz() -> PlainTextResponse:
        return probe(live)

    @router.get("/readyz")
    def readyz() -> PlainTextResponse:
        return probe(ready)

    @router.get("/metrics")
    def prometheus() -> Response:
        try:
            body = generate_latest(exposition_registry())
        except Exception as exc:
            logger.warning("could not render metrics: %s", redact(str(exc)))
            return PlainTextResponse("metrics unavailable\n", 500, headers=NO_STORE)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)

    return router


class Readiness:
    """``SELECT 1`` on the database and ``PING`` on Redis, each bounded by ``timeout``."""

    def __init__(self, settings: Settings, timeout: float = READY_TIMEOUT) -> None:
        self.engine = _probe_engine(settings.database_url_value(), timeout)
        url = settings.redis_url_value()
        self.redis = (
            redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            if url
            else None
        )
        self._last: bool | None = None

    def __call__(self) -> tuple[bool, str]:
        parts: list[str] = []
        failed: list[str] = []
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            parts.append("database ok")
        except Exception as exc:
            failed.append("database")
            parts.append(f"database unreachable ({type(exc).__name__})")
            self._log("database", exc)
        if self.redis is not None:
            try:
                self.redis.ping()
                parts.append("redis ok")
            except Exception as exc:
                failed.append("redis")
                parts.append(f"redis unreachable ({type(exc).__name__})")
                self._log("redis", exc)
        ok = not failed
        if ok and self._last is False:
            logger.info("ready again: database and redis reachable")
        self._last = ok
        return ok, "; ".join(parts)

    def _log(self, what: str, exc: Exception) -> None:
        if self._last is not False:  # once per outage, not every probe
            logger.warning("not ready: %s unreachable: %s", what, redact(str(exc)))

    def close(self) -> None:
        self.engine.dispose()
        if self.redis is not None:
            self.redis.close()


def _probe_engine(url: str, timeout: float) -> Engine:
    if url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool, connect_args={"timeout": timeout})
    # A fresh connection per probe: tests reachability itself, and never waits for (or
    # starves) the service's own pool.
    return create_engine(
        url,
        poolclass=NullPool,
        connect_args={
            "connect_timeout": max(int(timeout), 1),
            "options": f"-c statement_timeout={int(timeout * 1000)}",
        },
    )


# -- worker heartbeat -----------------------------------------------------------------


def heartbeat_check(settings: Settings) -> tuple[bool, str]:
    """Whether this container's worker heartbeat file is fresh (worker liveness)."""
    path = settings.heartbeat_file
    limit = HEARTBEAT_STALE_AFTER * settings.heartbeat_interval
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"no worker heartbeat at {path} (not started yet, or cannot write it)"
    except OSError as exc:
        return False, f"cannot read worker heartbeat {path}: {exc.strerror}"
    if age > limit:
        return False, f"worker heartbeat {path} is {age:.1f}s old (limit {limit:g}s)"
    return True, f"worker heartbeat {age:.1f}s old (limit {limit:g}s)"


def worker_check(settings: Settings) -> int:
    """``cronwork worker --check``: exit 0 when the heartbeat is fresh, else say why, 1."""
    ok, why = heartbeat_check(settings)
    print(why)
    return 0 if ok else 1


# -- wiring for the CLI -----------------------------------------------------------------


def serve(
    settings: Settings, live: Check, dashboard: Dashboard | None = None
) -> HealthServer | None:
    """Start the endpoints (and the dashboard, if given) on the configured port; None when
    ``http_port`` is 0."""
    if settings.http_port == 0:
        return None
    server = HealthServer(
        settings.http_host,
        settings.http_port,
        live=live,
        ready=Readiness(settings),
        dashboard=dashboard,
    ).start()
    what = "/healthz, /readyz, /metrics" + (" and the dashboard" if dashboard else "")
    logger.info("serving %s on %s:%d", what, settings.http_host, server.port)
    if dashboard is not None:
        dashboard.announce(settings.http_host, server.port)
    return server


@contextlib.contextmanager
def worker_parent(settings: Settings) -> Iterator[HealthServer | None]:
    """Around Dramatiq's CLI in ``cronwork worker``: set up what its children inherit, serve.

    - ``PROMETHEUS_MULTIPROC_DIR``: a fresh directory per run (stale files from another
      run would be summed in); children write their samples there, this parent serves
      them all on /metrics; removed on exit.
    - ``CRONWORK_HEARTBEAT_FILE``: made absolute so every child and ``--check`` agree;
      a previous run's file is removed, so "fresh" means this run beat.
    """
    metrics_dir = tempfile.mkdtemp(prefix="cronwork-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    heartbeat = Path(settings.heartbeat_file).absolute()
    os.environ["CRONWORK_HEARTBEAT_FILE"] = str(heartbeat)
    with contextlib.suppress(OSError):
        heartbeat.unlink()
    server = None
    try:
        server = serve(settings, lambda: heartbeat_check(settings))
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
