"""services.redact: secrets never reach a log line, an error message or an alert."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.logs import JsonFormatter
from services.redact import MASK, RedactingFilter, redact

PG_PASSWORD = "pg-S3cret-Pw"
REDIS_PASSWORD = "rd-hunter22"
SENTRY_KEY = "0123456789abcdef0123456789abcdef"
SLACK_PATH = "T0001ABCD/B0002EFGH/XyZxyZxyZxyZxyZxyZxyZxyZ"

PG_URL = f"postgresql+psycopg2://cronwork:{PG_PASSWORD}@db.internal:5432/cronwork"
REDIS_URL = f"redis://:{REDIS_PASSWORD}@redis.internal:6379/0"
SENTRY_DSN = f"https://{SENTRY_KEY}@o123.ingest.sentry.io/4567"
SLACK_URL = f"https://hooks.slack.com/services/{SLACK_PATH}"

#: Fragments none of which may survive redaction.
SECRET_PARTS = [PG_PASSWORD, REDIS_PASSWORD, SENTRY_KEY, SLACK_PATH, "T0001ABCD", "XyZxyZ"]


def assert_clean(text: str) -> None:
    for part in SECRET_PARTS:
        assert part not in text, f"{part!r} leaked in {text!r}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PG_URL, "postgresql+psycopg2://cronwork:***@db.internal:5432/cronwork"),
        (REDIS_URL, "redis://:***@redis.internal:6379/0"),
        ("rediss://default:pa%40ss%2Fw0rd@r:6380/1", "rediss://default:***@r:6380/1"),
        ("amqp://guest:guest@localhost//", "amqp://guest:***@localhost//"),
        # Unencoded '/' and '@' in a password: drivers accept them, so must redaction.
        ("postgresql://u:ab/cd@host/db", "postgresql://u:***@host/db"),
        ("redis://:p@ss@host:6379", "redis://:***@host:6379"),
        (SENTRY_DSN, "https://***@o123.ingest.sentry.io/4567"),
        (
            f"https://{SENTRY_KEY}:deadbeefcafe@sentry.example.com/3",
            "https://***@sentry.example.com/3",
        ),
        (SLACK_URL, "https://hooks.slack.com/services/***"),
        (
            "https://hooks.slack.com/workflows/T01/A02/123/abcdef",
            "https://hooks.slack.com/workflows/***",
        ),
    ],
)
def test_urls(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(f"error: could not reach {text} (retrying)") == (
        f"error: could not reach {expected} (retrying)"
    )


def test_several_secrets_in_one_line_and_quoted() -> None:
    line = f'db={PG_URL!r} redis="{REDIS_URL}" sentry={SENTRY_DSN}, slack=<{SLACK_URL}>'
    out = redact(line)
    assert_clean(out)
    assert out.count(MASK) == 4
    assert "db.internal:5432/cronwork" in out and "redis.internal:6379/0" in out


def test_urls_without_secrets_are_untouched() -> None:
    for text in [
        "postgresql://db.internal:5432/cronwork",
        "redis://redis:6379/0",
        "https://example.com:8443/path?q=1",
        "ssh://git@github.com/org/repo",
        "https://o123.ingest.sentry.io/api/4567/envelope/",
        "plain text with a: colon and an @ sign",
    ]:
        assert redact(text) == text


def test_explicit_secrets() -> None:
    token = "tok_live_abcdef123456"
    out = redact(f"Authorization: Bearer {token}; again {token}", [token])
    assert token not in out and out.count(MASK) == 2
    # Empty and very short secrets are ignored, not used to mask every "a" in the line.
    assert redact("a cat", ["", "a"]) == "a cat"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, io.StringIO]]:
    """A real logger with two real handlers (text and JSON), each behind a RedactingFilter."""
    text_out, json_out = io.StringIO(), io.StringIO()
    text_handler = logging.StreamHandler(text_out)
    text_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    json_handler = logging.StreamHandler(json_out)
    json_handler.setFormatter(JsonFormatter())
    for handler in (text_handler, json_handler):
        handler.addFilter(RedactingFilter([PG_URL, "explicit-secret-value"]))
    logger = logging.getLogger("cronwork.test_redact")
    logger.handlers[:] = [text_handler, json_handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, text_out, json_out
    logger.handlers.clear()


def test_filter_masks_message_args_extras_and_tracebacks(
    capture: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, text_out, json_out = capture
    logger.info("connecting to %s and %s", PG_URL, REDIS_URL)
    logger.warning("alerting via %(hook)s", {"hook": SLACK_URL})
    logger.error("sentry %s said explicit-secret-value", SENTRY_DSN, extra={"dsn": SENTRY_DSN})
    try:
        try:
            raise ConnectionError(f"could not connect to {REDIS_URL}")
        except ConnectionError as inner:
            raise RuntimeError(f"startup failed for {PG_URL}") from inner
    except RuntimeError:
        logger.exception("boom at %d%%", 100)

    text = text_out.getvalue()
    lines = [json.loads(line) for line in json_out.getvalue().splitlines()]
    assert_clean(text)
    assert_clean(json_out.getvalue())
    assert "explicit-secret-value" not in text + json_out.getvalue()
    # What is not secret is still there, so the lines stay useful.
    assert "INFO cronwork.test_redact: connecting to" in text
    assert "redis.internal:6379/0" in text
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: startup failed for ***" in text  # PG_URL is an explicit secret
    assert "ConnectionError: could not connect to redis://:***@redis.internal" in text
    assert "boom at 100%" in text
    assert [line["level"] for line in lines] == ["INFO", "WARNING", "ERROR", "ERROR"]
    assert lines[2]["dsn"] == "https://***@o123.ingest.sentry.io/4567"
    assert "ConnectionError" in lines[3]["exc"]


def test_filter_keeps_records_and_leaves_clean_ones_alone(
    capture: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, text_out, _ = capture
    logger.info("%d fires for %s", 3, "nightly")
    logger.info("50% done")
    assert text_out.getvalue().splitlines() == [
        "INFO cronwork.test_redact: 3 fires for nightly",
        "INFO cronwork.test_redact: 50% done",
    ]
