"""services.redact: secrets never reach a log line, an error message or an alert."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from services import redact as redaction
from services.logs import JsonFormatter, configure_redaction, secrets_of
from services.redact import MASK, RedactingFilter, printable, redact, shown
from services.settings import Settings

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


# ------------------------------------------------------------- linear time (issue 9.1)

#: The pattern main used: quadratic on long runs of scheme characters.
_OLD_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S+)@"
)

#: Inputs that made a backtracking pattern slow, each about a megabyte.
LONG_INPUTS = {
    "letters": "a" * 1_000_000,
    "digits": "7" * 1_000_000,
    "letters then a scheme end": "a" * 1_000_000 + "://",
    "many schemes": "a://" * 250_000,
    "many schemes and an @": "ab://c:" * 150_000 + "@",
    "a long user": "http://" + "a" * 1_000_000 + ":@@",
    "hex after https": "https://" + "0" * 1_000_000,
    "dsn-like repeats": ("https://" + "0" * 20 + ":") * 30_000,
    "slack paths": "hooks.slack.com/services/" * 40_000,
    "at signs": "@" * 1_000_000,
}


@pytest.mark.parametrize("text", LONG_INPUTS.values(), ids=list(LONG_INPUTS))
def test_redaction_takes_linear_time_on_long_inputs(text: str) -> None:
    # main's pattern needed 18 s for an 80,000-character error (the process stood still:
    # `re` holds the GIL); a megabyte now takes milliseconds.
    started = time.process_time()
    redact(text)
    assert time.process_time() - started < 0.5


def test_a_long_error_with_a_url_in_it_is_still_masked() -> None:
    text = "x" * 500_000 + f" failed: {PG_URL} " + "y" * 500_000
    out = redact(text)
    assert_clean(out)
    assert "db.internal:5432/cronwork" in out


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.text(alphabet="ab1:/@.+- \n", max_size=30))
def test_url_passwords_are_masked_exactly_as_the_old_pattern_did(text: str) -> None:
    old = _OLD_URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    assert redact(text) == old


# ---------------------------------------------------- configured secrets (issue 9.6)

DSN_KEY = "cw-public-key-7f3a9c"  # not hex: no pattern recognises it
ODD_DSN = f"http://{DSN_KEY}@sentry.example.com/42"


@pytest.fixture
def configured_secrets() -> Iterator[None]:
    configured = Settings(
        database_url=SecretStr(PG_URL),
        redis_url=SecretStr(REDIS_URL),
        sentry_dsn=SecretStr(ODD_DSN),
        slack_webhook_url=SecretStr(SLACK_URL),
    )
    configure_redaction(configured)
    yield
    redaction.configure(())


def test_configured_secrets_are_masked_by_every_redact_call(configured_secrets: None) -> None:
    error = f"cannot post to {ODD_DSN}; key {DSN_KEY}; pw {PG_PASSWORD}; hook {SLACK_PATH}"
    out = redact(error)
    assert DSN_KEY not in out and PG_PASSWORD not in out and "XyZxyZ" not in out
    assert out.startswith("cannot post to ***; key ***")
    # Without configuration the odd DSN's key passes every pattern: masking needs the value.
    redaction.configure(())
    assert DSN_KEY in redact(error)


def test_names_printed_anyway_are_not_masked_where_they_stand_alone() -> None:
    # docker-compose's defaults: user, password and database are all "cronwork".
    compose = Settings(
        database_url=SecretStr("postgresql+psycopg2://cronwork:cronwork@postgres:5432/cronwork"),
        redis_url=SecretStr("redis://:hunter2-redis@redis:6379/0"),
    )
    parts = secrets_of(compose)
    assert "cronwork" not in parts  # else every log line saying "cronwork" is garbled
    assert "hunter2-redis" in parts
    assert redact("postgresql+psycopg2://cronwork:cronwork@postgres/cronwork") == (
        "postgresql+psycopg2://cronwork:***@postgres/cronwork"
    )


# ------------------------------------------------------- control characters (9.9)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("a\rb\nc\td", "a\\rb\\nc\\td"),
        ("nul\x00", "nul\\x00"),
        ("\u009b2J csi", "\\x9b2J csi"),
        ("bidi \u202eevil", "bidi \\u202eevil"),
        ("plain: ünïcode ✓", "plain: ünïcode ✓"),
    ],
)
def test_printable_escapes_control_characters(raw: str, expected: str) -> None:
    assert printable(raw) == expected
    assert shown(raw) == expected
