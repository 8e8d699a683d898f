"""A worker's log handler writes bursts of lines together, and loses none of them."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from services.logs import CoalescingStreamHandler, configure_logging, flush_logs
from services.settings import Settings
from tests.waiting import wait_for


class Recording(io.StringIO):
    """A stream that counts the writes it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture(name="logger")
def logger_fixture() -> Iterator[logging.Logger]:
    log = logging.getLogger("cronwork-test-coalescing")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def test_a_line_after_a_quiet_spell_is_written_at_once(logger: logging.Logger) -> None:
    stream = Recording()
    logger.addHandler(CoalescingStreamHandler(stream, interval=60.0))
    logger.info("first")
    assert stream.getvalue() == "first\n"


def test_a_burst_is_kept_and_written_together_by_flush(logger: logging.Logger) -> None:
    stream = Recording()
    handler = CoalescingStreamHandler(stream, interval=60.0)
    logger.addHandler(handler)
    for n in range(100):
        logger.info("line %d", n)
    assert stream.getvalue() == "line 0\n"  # the rest came within the interval
    handler.flush()  # what logging's shutdown does at exit
    assert stream.getvalue() == "".join(f"line {n}\n" for n in range(100))
    assert stream.writes == 2


def test_kept_lines_are_written_within_the_interval_without_more_logging(
    logger: logging.Logger,
) -> None:
    stream = Recording()
    logger.addHandler(CoalescingStreamHandler(stream, interval=0.2))
    for n in range(50):
        logger.info("line %d", n)
    wait_for(lambda: stream.getvalue().count("\n") == 50, timeout=5, what="the kept lines")
    assert stream.getvalue() == "".join(f"line {n}\n" for n in range(50))
    assert stream.writes < 10


def test_a_worker_that_exits_writes_every_line_it_kept() -> None:
    program = (
        "import logging, sys\n"
        "from services.logs import configure_logging\n"
        "from services.settings import Settings\n"
        "configure_logging(Settings(), sys.stdout, coalesce=True)\n"
        "log = logging.getLogger('burst')\n"
        "for n in range(1000):\n"
        "    log.warning('line %d', n)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in out] == [str(n) for n in range(1000)]


@pytest.fixture(name="root_logging")
def root_logging_fixture() -> Iterator[None]:
    """configure_logging changes the root logger and logging's globals: put them back."""
    root = logging.getLogger()
    noisy = logging.getLogger("dramatiq.worker.WorkerThread")
    saved = (list(root.handlers), root.level, list(noisy.filters))
    flags = (logging._srcfile, logging.logThreads, logging.logProcesses)
    multiprocessing = logging.logMultiprocessing
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    noisy.filters = saved[2]
    logging._srcfile, logging.logThreads, logging.logProcesses = flags
    logging.logMultiprocessing = multiprocessing


@pytest.mark.usefixtures("root_logging")
def test_coalesced_lines_are_masked_as_any_other() -> None:
    stream = Recording()
    secret = "postgresql://cronwork:s3cr3t-pass@db/cronwork"
    configure_logging(Settings(database_url=secret), stream, coalesce=True)
    for _ in range(3):
        logging.getLogger("cronwork-test-masked").info("cannot reach %s", secret)
    flush_logs()
    text = stream.getvalue()
    assert text.count("cannot reach") == 3
    assert "s3cr3t-pass" not in text


def test_a_warning_is_written_at_once_with_the_lines_kept_before_it(
    logger: logging.Logger,
) -> None:
    stream = Recording()
    logger.addHandler(CoalescingStreamHandler(stream, interval=60.0))
    logger.info("first")
    logger.info("kept")
    assert stream.getvalue() == "first\n"
    logger.warning("trouble")
    assert stream.getvalue() == "first\nkept\ntrouble\n"
