"""Logging for every cronwork process: one line per record, secrets masked."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from services import redact
from services.redact import STANDARD_ATTRS, RedactingFilter
from services.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in STANDARD_ATTRS})
        if record.exc_text or record.exc_info:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(out, default=str)


class CoalescingStreamHandler(logging.StreamHandler):
    """A stream handler that writes a burst of lines with one system call.

    A worker logs a line per attempt from each of its threads. Written and flushed one by
    one, each line is a system call during which its thread gives up the interpreter
    lock while it holds the handler's: under load every other thread that logs queues on
    that lock, and the process spends more time handing the lock around than logging
    (a fifth of a tracked worker's throughput with two processes on two cores). Here a
    line after a quiet spell is written at once; lines that follow within ``interval``
    are kept and written together by a timer thread at most ``interval`` later; a warning
    or worse is written at once. Logging's shutdown (at exit) writes what is kept, and so
    does the worker's broker when it closes (Dramatiq's worker process closes the pipe
    its stderr is before exiting); a killed process loses at most the last ``interval``
    of lines.
    """

    def __init__(self, stream: Any = None, interval: float = 0.05) -> None:
        super().__init__(stream)
        self.interval = interval
        self._kept: list[str] = []
        self._last_write = 0.0
        self._due = threading.Event()
        self._timer: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        # Called with the handler's lock held (Handler.handle).
        self._kept.append(line)
        # A warning or worse is written at once, with whatever is kept before it.
        if record.levelno >= logging.WARNING or (
            time.monotonic() - self._last_write >= self.interval
        ):
            self._write()
        elif not self._due.is_set():
            self._due.set()
            if self._timer is None or not self._timer.is_alive():
                self._timer = threading.Thread(
                    target=self._write_later, name="cronwork-log-writer", daemon=True
                )
                self._timer.start()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        self._last_write = time.monotonic()
        if not self._kept:
            return
        text, self._kept = "".join(self._kept), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # as StreamHandler: a broken stream must not break the caller
            self.handleError(logging.makeLogRecord({"msg": "could not write log lines"}))

    def _write_later(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self.interval)
            self._due.clear()
            self.flush()


def secrets_of(settings: Settings) -> list[str]:
    """Every configured secret: each URL whole, and the password, key or token inside it.

    A part is listed only when it is long enough not to mask ordinary words (six
    characters) and is not also a user, host or database name of a configured URL: those
    names are printed unmasked (``postgresql://cronwork:***@db/cronwork``), so masking the
    same word elsewhere would hide nothing and garble every line that says "cronwork".
    """
    urls = [
        v.get_secret_value()
        for v in (
            settings.database_url,
            settings.redis_url,
            settings.sentry_dsn,
            settings.slack_webhook_url,
            settings.dashboard_token,
            settings.dashboard_readonly_token,
        )
        if v is not None
    ]
    parts: set[str] = set()
    public: set[str] = set()
    for url in urls:
        secret_parts, public_parts = _url_parts(url)
        parts |= secret_parts
        public |= public_parts
    return urls + sorted(p for p in parts - public if len(p) >= MIN_SECRET_PART)


#: Shorter passwords, keys and tokens are masked only inside a URL (by shape).
MIN_SECRET_PART = 6


def _url_parts(url: str) -> tuple[set[str], set[str]]:
    """(secret parts, public parts) of one configured URL."""
    try:
        split = urlsplit(url)
        user, password, host = split.username, split.password, split.hostname
    except ValueError:  # not a URL a driver would accept either: the whole value is masked
        return set(), set()
    secret: set[str] = set()
    if password:
        secret |= {password, unquote(password)}
    if user and split.scheme in ("http", "https"):
        secret |= {user, unquote(user)}  # a Sentry DSN: the user part is the key
        user = None
    path = split.path.strip("/")
    if host == "hooks.slack.com":
        # /services/T…/B…/token: the token is the secret, the ids only matter with it.
        segments = path.split("/")
        secret |= {"/".join(segments[1:]), segments[-1]}
        path = ""
    public = {p for p in (user, host, path) if p}
    return {s for s in secret if s}, public


def configure_redaction(settings: Settings) -> None:
    """Mask this process's configured secrets in every ``redact`` call from now on."""
    redact.configure(secrets_of(settings))


def _dramatiq_noise(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return "Results middleware" not in message and not message.endswith("was skipped.")


def configure_logging(settings: Settings, stream: Any = None, *, coalesce: bool = False) -> None:
    """``coalesce``: lines that come in bursts are written together (a worker process,
    ``CoalescingStreamHandler``); otherwise each line is written as it is logged."""
    target = stream or sys.stderr
    handler = CoalescingStreamHandler(target) if coalesce else logging.StreamHandler(target)
    handler.addFilter(RedactingFilter(secrets_of(settings)))
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Neither format names the source line, the thread or the process: not looking them up
    # for each record (the logging HOWTO's "Optimization") halves what a worker pays for
    # the line it logs per attempt.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # Dramatiq warns about every actor return value without its Results backend (cronwork
    # stores return values itself), and about every skipped message (tracking logs each
    # skip with its reason, and a database outage skips every message it puts back).
    logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_dramatiq_noise)
    for noisy in ("apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))


def flush_logs() -> None:
    """Write every line the root logger's handlers keep."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # a closed stream: nothing more to write to
            handler.flush()
