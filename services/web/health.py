"""``/healthz``, ``/readyz`` and ``/metrics`` for the scheduler, the worker and ``up``.

A stdlib ``ThreadingHTTPServer`` in a daemon thread, on ``CRONWORK_HTTP_PORT`` (0 turns it
off) and ``CRONWORK_HTTP_HOST`` (default ``0.0.0.0``: the kubelet and Prometheus reach a
pod by its IP; set ``127.0.0.1`` on a laptop). Nothing served here carries a secret: the
bodies name what failed and the exception type, never a URL or an error message.

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
import errno
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from services.errors import CronworkError
from services.metrics import MULTIPROC_ENV, exposition_registry
from services.redact import redact
from services.settings import Settings

logger = logging.getLogger(__name__)

#: A probe answers (ok, one line saying why).
Check = Callable[[], tuple[bool, str]]

#: Seconds each readiness dependency may take before it counts as down (the chart's
#: probes time out after 5 s).
READY_TIMEOUT = 2.0
#: The worker heartbeat is fresh while younger than this many heartbeat intervals.
HEARTBEAT_STALE_AFTER = 3


class HealthServer:
    """Serves the three endpoints from a daemon thread until ``stop()`` or process exit."""

    def __init__(self, host: str, port: int, *, live: Check, ready: Check) -> None:
        self.live = live
        self.ready = ready
        handler = _handler_for(self)
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise CronworkError(
                f"cannot serve HTTP on {host}:{port}: {exc.strerror}; {_bind_hint(exc)}"
            ) from exc
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> HealthServer:
        # SIGTERM/SIGINT must reach the main thread's handlers (the scheduler's stop, or
        # Dramatiq's forwarding to its children), never a server thread: block them in the
        # threads this creates (they inherit the mask).
        blocked = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self._thread = threading.Thread(
                target=self.server.serve_forever,
                kwargs={"poll_interval": 0.5},
                name="cronwork-http",
                daemon=True,
            )
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(5)
        self.server.server_close()


def _bind_hint(exc: OSError) -> str:
    """What to set when the port cannot be served: a second process on one host (two
    scheduler replicas, a scheduler and a worker) is the usual reason."""
    if exc.errno == errno.EADDRINUSE:
        return (
            "each cronwork process on one host needs a port of its own: set "
            "CRONWORK_HTTP_PORT to a free port, or to 0 to serve no HTTP"
        )
    return "check CRONWORK_HTTP_HOST and CRONWORK_HTTP_PORT (0 serves no HTTP)"


def _handler_for(health: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that never finishes its request must not hold a thread

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._probe(health.live)
            elif path == "/readyz":
                self._probe(health.ready)
            elif path == "/metrics":
                try:
                    body = generate_latest(exposition_registry())
                except Exception as exc:
                    logger.warning("could not render metrics: %s", redact(str(exc)))
                    self._send(500, b"metrics unavailable\n", "text/plain; charset=utf-8")
                    return
                self._send(200, body, CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found: /healthz, /readyz, /metrics\n")

        def _probe(self, check: Check) -> None:
            try:
                ok, why = check()
            except Exception as exc:
                ok, why = False, f"probe error ({type(exc).__name__})"
            self._send(200 if ok else 503, f"{'ok' if ok else 'fail'}: {why}\n".encode())

        def _send(
            self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Probes every few seconds would drown the log.
            logger.debug("http: " + format, *args)

    return Handler


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


def serve(settings: Settings, live: Check) -> HealthServer | None:
    """Start the endpoints on the configured port; None when ``http_port`` is 0."""
    if settings.http_port == 0:
        return None
    server = HealthServer(
        settings.http_host, settings.http_port, live=live, ready=Readiness(settings)
    ).start()
    logger.info("serving /healthz, /readyz, /metrics on %s:%d", settings.http_host, server.port)
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
