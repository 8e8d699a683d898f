"""Bad CLI arguments and settings are refused by the parser, on one line (issue 9.10)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from services.cli import build_parser, main
from services.settings import Settings


@pytest.fixture(autouse=True)
def _no_cronwork_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CRONWORK_"):
            monkeypatch.delenv(name)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The parser's one line for ``argv``; it must exit 2, as argparse does."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, not usage plus a message
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # main: -1 meant "no limit" (a 6-line SQL error on Postgres).
        (["history", "--limit", "-1"], "argument --limit: must be from 1 to 10000, got -1"),
        (["history", "--limit", "0"], "argument --limit: must be from 1 to 10000, got 0"),
        (["history", "--limit", "ten"], "expected a whole number from 1 to 10000, got 'ten'"),
        (["incidents", "--limit", "100001"], "argument --limit: must be from 1 to 10000"),
        # main: exited 0 / ran without bound.
        (["next", "job", "-n", "-1"], "argument -n: must be from 1 to 1000, got -1"),
        (["next", "job", "-n", "1000000000"], "argument -n: must be from 1 to 1000"),
        # main: crash-looped / started and did nothing.
        (["up", "--threads", "-1"], "argument --threads/-t: must be from 1 to 256, got -1"),
        (["worker", "-p", "0"], "argument --processes/-p: must be from 1 to 256, got 0"),
        (["worker", "-t", "0"], "argument --threads/-t: must be from 1 to 256, got 0"),
        # main: a raw ValueError.
        (["next", "job", "--after", "yesterday"], "expected an ISO 8601 time like 2026-12-01"),
        (["next", "job", "--after", "0001-01-01"], "outside the years schedules fire in"),
        # history filters and `run` (tracked ad-hoc runs).
        (["history", "--since", "last week"], "argument --since: expected an ISO 8601 time"),
        (["history", "--status", "broken"], "--status: expected one of pending, enqueued,"),
        (
            ["history", "--kind", "cron"],
            "--kind: expected one of scheduled, catchup, manual, adhoc",
        ),
        (["run"], "the following arguments are required: name"),
        (["run", "job", "--", "acme"], "expected a JSON value (a string in double quotes"),
        (["run", "job", "--", "1", "{bad"], "got '{bad'"),
        (["run", "job", "--kwargs", "[1]"], "--kwargs: expected a JSON object"),
        (["run", "job", "--kwargs", "month"], "--kwargs: expected a JSON value"),
        (["run", "job", "--key", "k" * 201], "--key: expected 1-200 printable characters"),
        (["run", "job", "--key", "a\nb"], "--key: expected 1-200 printable characters"),
        (["run", "job", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(argv, capsys)
    assert expected in err
    assert err.startswith("cronwork")
    assert "--help" in err


def test_good_arguments_still_parse() -> None:
    args = build_parser().parse_args(["next", "job", "-n", "3", "--after", "2026-12-01T09:00Z"])
    assert (args.n, args.after) == (3, datetime(2026, 12, 1, 9, tzinfo=UTC))
    naive = build_parser().parse_args(["next", "job", "--after", "2026-12-01"]).after
    assert naive == datetime(2026, 12, 1) and naive.tzinfo is None
    assert build_parser().parse_args(["history", "--limit", "10000"]).limit == 10000
    assert build_parser().parse_args(["worker", "-p", "2", "-t", "16"]).processes == 2
    h = build_parser().parse_args(
        [
            "history",
            "--actor",
            "a",
            "--status",
            "FAILED",
            "--kind",
            "adhoc",
            "--since",
            "2026-11-01",
        ]
    )
    assert (h.actor, h.status, h.kind, h.since) == ("a", "failed", "adhoc", datetime(2026, 11, 1))


@pytest.mark.parametrize(
    ("argv", "args", "key", "kwargs"),
    [
        (["run", "job"], [], None, {}),
        (["run", "job", "--key", "k", "--", "0.5", '"acme"'], [0.5, "acme"], "k", {}),
        (["run", "job", "--", "-5", "[1, 2]"], [-5, [1, 2]], None, {}),
        (["run", "job", "1", "--key", "k"], [1], "k", {}),
        (["run", "job", "--key", "k", "1", "null"], [1, None], "k", {}),
        (["run", "job", "--kwargs", '{"month": "2026-11"}'], [], None, {"month": "2026-11"}),
    ],
)
def test_run_takes_json_values_after_its_options(
    argv: list[str], args: list[object], key: str | None, kwargs: dict[str, object]
) -> None:
    parsed = build_parser().parse_args(argv)
    assert (parsed.name, parsed.args, parsed.key, parsed.kwargs) == ("job", args, key, kwargs)


# ------------------------------------------------------------------------ settings


def settings_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str
) -> str:
    for name, value in env.items():
        monkeypatch.setenv(f"CRONWORK_{name}", value)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # main: four lines, the input repeated
    assert err.startswith("cronwork: invalid settings: ")
    assert "Traceback" not in err
    for value in env.values():
        # A one-character value may occur in any message ("0.1"); longer ones must not.
        assert len(value) < 2 or value not in err, err
    return err


SECRETISH = "pw-hunter2-xyz"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # main: a traceback.
        ({"LOG_LEVEL": "LOUD"}, "CRONWORK_LOG_LEVEL: must be one of DEBUG, INFO, WARNING"),
        ({"LOG_FORMAT": "xml"}, "CRONWORK_LOG_FORMAT: must be one of text, json"),
        # main: passed, and the scheduler never led.
        ({"LEASE_TTL": "inf"}, "CRONWORK_LEASE_TTL: Input should be a finite number"),
        ({"LEASE_TTL": "nan"}, "CRONWORK_LEASE_TTL: Input should be a finite number"),
        ({"LEASE_TTL": "0.01"}, "CRONWORK_LEASE_TTL: Input should be greater than or equal"),
        ({"LEASE_TTL": "86400"}, "CRONWORK_LEASE_TTL: Input should be less than or equal"),
        ({"HEARTBEAT_INTERVAL": "-1"}, "CRONWORK_HEARTBEAT_INTERVAL: Input should be greater"),
        ({"RETENTION_DAYS": "inf"}, "CRONWORK_RETENTION_DAYS: Input should be a finite number"),
        ({"LOST_AFTER": "0"}, "CRONWORK_LOST_AFTER: Input should be greater than or equal"),
        ({"WATCHDOG_INTERVAL": "1e308"}, "CRONWORK_WATCHDOG_INTERVAL: Input should be less"),
        ({"HTTP_PORT": "99999"}, "CRONWORK_HTTP_PORT: Input should be less than or equal"),
        # main: broke `trigger` on Postgres (a 200-character column).
        ({"INSTANCE_ID": "i" * 500}, "CRONWORK_INSTANCE_ID: must be 1-100 printable"),
        ({"INSTANCE_ID": "two words"}, "CRONWORK_INSTANCE_ID: must be 1-100 printable"),
        ({"REDIS_PREFIX": "a\nb"}, "CRONWORK_REDIS_PREFIX: must be 1-100 printable"),
        # The rejected value is never echoed, whatever it is.
        ({"RESEND_AFTER": SECRETISH}, "CRONWORK_RESEND_AFTER: Input should be a valid number"),
    ],
)
def test_bad_settings_are_one_line_without_the_value(
    env: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert expected in settings_error(monkeypatch, capsys, **env)


def test_several_bad_settings_share_the_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = settings_error(monkeypatch, capsys, LOG_LEVEL="LOUD", LEASE_TTL="inf")
    assert "CRONWORK_LEASE_TTL" in err and "CRONWORK_LOG_LEVEL" in err and "; " in err


def test_empty_settings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # A compose file's `CRONWORK_DATABASE_URL=`: main took "" as a URL.
    for name in ("DATABASE_URL", "REDIS_URL", "SENTRY_DSN", "SLACK_WEBHOOK_URL", "LEASE_TTL"):
        monkeypatch.setenv(f"CRONWORK_{name}", "")
    settings = Settings()
    assert settings.database_url is None and settings.redis_url is None
    assert settings.sentry_dsn is None and settings.slack_webhook_url is None
    assert settings.embedded and settings.lease_ttl == 10.0
    assert settings.database_url_value().startswith("sqlite:///")


def test_log_level_and_format_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONWORK_LOG_LEVEL", "debug")
    monkeypatch.setenv("CRONWORK_LOG_FORMAT", "JSON")
    settings = Settings()
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
