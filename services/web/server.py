"""uvicorn in a daemon thread, next to the process's real work (scheduler, worker, up).

The socket is bound here, before the thread starts, so a taken port fails the caller
at once with a clean message. Signals stay with the main thread: uvicorn installs no
handlers off the main thread, and the threads made here block SIGINT/SIGTERM.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
from typing import Any

import uvicorn

from services.errors import CronworkError

#: Seconds open connections get to finish when the server stops.
GRACEFUL_SHUTDOWN_SECONDS = 2


class HttpServer:
    """Serves an ASGI app from a daemon thread until ``stop()`` or process exit."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise CronworkError(
                f"cannot serve HTTP on {host}:{port}: {exc.strerror}; {_bind_hint(exc)}"
            ) from exc
        self.sock.listen(128)
        config = uvicorn.Config(
            app,
            log_config=None,
            # Access logs would print every probe, and the login URL's token with them.
            access_log=False,
            lifespan="off",
            timeout_keep_alive=10,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            server_header=False,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        # uvicorn's "Uvicorn running on ..." lines repeat what cronwork logs itself.
        logging.getLogger("uvicorn").setLevel(logging.WARNING)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> HttpServer:
        blocked = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self._thread = threading.Thread(
                target=self.server.run,
                kwargs={"sockets": [self.sock]},
                name="cronwork-http",
                daemon=True,
            )
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.should_exit = True
            self._thread.join(GRACEFUL_SHUTDOWN_SECONDS + 3)
        self.sock.close()


def _bind_hint(exc: OSError) -> str:
    """What to set when the port cannot be served: a second process on one host (two
    scheduler replicas, a scheduler and a worker) is the usual reason."""
    if exc.errno == errno.EADDRINUSE:
        return (
            "each cronwork process on one host needs a port of its own: set "
            "CRONWORK_HTTP_PORT to a free port, or to 0 to serve no HTTP"
        )
    return "check CRONWORK_HTTP_HOST and CRONWORK_HTTP_PORT (0 serves no HTTP)"
