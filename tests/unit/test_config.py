"""services.schedules.loader: schedules.yaml is validated whole, every problem at its line."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import dramatiq
import dramatiq.broker
import pytest
from dramatiq.brokers.stub import StubBroker

from services.errors import ConfigError
from services.schedules.actors import check_actors
from services.schedules.loader import ScheduleFile, load_schedules, parse_schedules
from services.schedules.spec import ScheduleSpec

FULL = """\
imports: [actors.digest, actors.sessions]
defaults:
  queue: default
  max_retries: 3
  timezone: UTC
schedules:
  weekly-digest:
    actor: send_weekly_digest
    cron: "0 8 * * 1"
    timezone: Europe/Berlin
    args: [1, "x"]
    kwargs: {limit: 10}
    queue: reports
    max_retries: 2
    min_backoff: 10s
    max_backoff: 5m
    time_limit: 10m
    max_runtime: 15m
    overlap: skip
    catchup: latest
    catchup_window: 1h
    jitter: 30s
    enabled: true
    start: 2026-01-01T00:00:00
    end: 2027-01-01T00:00:00
  heartbeat:
    actor: heartbeat
    every: 15s
  launch:
    actor: launch
    at: "2026-12-01T09:00:00+01:00"
"""


def problems(text: str) -> list[str]:
    """The problems of an invalid file, as users see them."""
    with pytest.raises(ConfigError) as info:
        parse_schedules(textwrap.dedent(text))
    return [str(p) for p in info.value.problems]


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def schedule(body: str, name: str = "job") -> str:
    """A file with one schedule whose settings are ``body`` (lines 4 onwards)."""
    indented = textwrap.indent(textwrap.dedent(body), "    ")
    return f"imports: [actors.a]\nschedules:\n  {name}:\n{indented}"


def parse_one(body: str) -> ScheduleSpec:
    return parse_schedules(schedule(body)).schedules["job"]


# ------------------------------------------------------------------ valid files


def test_full_example_parses_to_expected_specs() -> None:
    parsed = parse_schedules(FULL)

    assert parsed.path == "schedules.yaml"
    assert parsed.imports == ("actors.digest", "actors.sessions")
    assert parsed.import_lines == {"actors.digest": 1, "actors.sessions": 1}
    assert list(parsed.schedules) == ["weekly-digest", "heartbeat", "launch"]
    berlin = ZoneInfo("Europe/Berlin")
    assert parsed.schedules["weekly-digest"] == ScheduleSpec(
        name="weekly-digest",
        actor="send_weekly_digest",
        trigger="cron",
        cron="0 8 * * 1",
        timezone="Europe/Berlin",
        start=datetime(2026, 1, 1, tzinfo=berlin),
        end=datetime(2027, 1, 1, tzinfo=berlin),
        jitter=timedelta(seconds=30),
        enabled=True,
        args=(1, "x"),
        kwargs={"limit": 10},
        queue="reports",
        max_retries=2,
        min_backoff=timedelta(seconds=10),
        max_backoff=timedelta(minutes=5),
        time_limit=timedelta(minutes=10),
        max_runtime=timedelta(minutes=15),
        overlap="skip",
        catchup="latest",
        catchup_window=timedelta(hours=1),
    )
    heartbeat = parsed.schedules["heartbeat"]
    assert heartbeat.trigger == "every"
    assert heartbeat.every == timedelta(seconds=15)
    assert (heartbeat.queue, heartbeat.max_retries, heartbeat.timezone) == ("default", 3, "UTC")
    launch = parsed.schedules["launch"]
    assert launch.trigger == "at"
    assert launch.at == datetime(2026, 12, 1, 9, tzinfo=timezone(timedelta(hours=1)))
    assert [s.line for s in parsed.schedules.values()] == [7, 26, 29]
    assert {s.file for s in parsed.schedules.values()} == {"schedules.yaml"}
    assert parsed.actor_lines == {"weekly-digest": 8, "heartbeat": 27, "launch": 30}


def test_defaults_apply_unless_a_schedule_sets_its_own() -> None:
    parsed = parse_schedules(
        textwrap.dedent("""\
        defaults:
          queue: slow
          max_retries: 0
          overlap: skip
          catchup: none
          catchup_window: 2h
          jitter: 5s
          enabled: false
          timezone: Asia/Tokyo
          time_limit: 1m
        schedules:
          a: {actor: a, every: 1m}
          b: {actor: b, every: 1m, queue: fast, enabled: true, max_retries: 5}
        """)
    )
    a, b = parsed.schedules["a"], parsed.schedules["b"]
    assert (a.queue, a.max_retries, a.enabled, a.timezone) == ("slow", 0, False, "Asia/Tokyo")
    assert (a.overlap, a.catchup, a.catchup_window) == ("skip", "none", timedelta(hours=2))
    assert (a.jitter, a.time_limit) == (timedelta(seconds=5), timedelta(minutes=1))
    assert (b.queue, b.max_retries, b.enabled) == ("fast", 5, True)
    assert parsed.imports == ()


def test_built_in_defaults_when_nothing_is_set() -> None:
    spec = parse_one("actor: a\nevery: 1m\n")
    assert spec == ScheduleSpec(name="job", actor="a", trigger="every", every=timedelta(minutes=1))


def test_naive_times_are_in_the_schedules_time_zone() -> None:
    spec = parse_one("actor: a\nevery: 1h\ntimezone: America/New_York\nstart: 2026-03-01T12:00\n")
    assert spec.start == datetime(2026, 3, 1, 12, tzinfo=ZoneInfo("America/New_York"))


def test_naive_times_use_the_default_time_zone() -> None:
    parsed = parse_schedules(
        "defaults: {timezone: Europe/Paris}\nschedules:\n  a: {actor: a, at: 2026-05-01T08:00}\n"
    )
    assert parsed.schedules["a"].at == datetime(2026, 5, 1, 8, tzinfo=ZoneInfo("Europe/Paris"))


def test_naive_times_default_to_utc_and_trailing_z_is_utc() -> None:
    spec = parse_one("actor: a\nevery: 1h\nstart: 2026-01-01\nend: 2026-06-01T00:00:00Z\n")
    assert spec.start == datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))
    assert spec.end == datetime(2026, 6, 1, tzinfo=UTC)
    assert spec.end is not None and spec.end.utcoffset() == timedelta(0)


def test_an_explicitly_empty_schedules_mapping_is_allowed() -> None:
    assert parse_schedules("schedules: {}\n").schedules == {}
    assert parse_schedules("imports: []\nschedules: {}\n").schedules == {}


def test_a_file_cut_off_after_schedules_is_refused() -> None:
    # Accepted on main ("0 schedule(s) OK"); the next deploy then removed every schedule.
    for text in ("imports: []\nschedules:\n", "schedules:", "schedules: ~\n", "schedules: null\n"):
        found = problems(text)
        assert len(found) == 1, found
        assert "schedules is empty: write 'schedules: {}'" in found[0]
        assert found[0].startswith("schedules.yaml:")


def test_names_may_use_letters_digits_dash_underscore_dot() -> None:
    name = "Nightly.v2_x-" + "a" * 51  # 64 characters
    parsed = parse_schedules(schedule("actor: a\nevery: 1m\n", name=name))
    assert list(parsed.schedules) == [name]
    # Written as YAML would read a bool or int, but a name is taken as written.
    parsed = parse_schedules(
        "schedules:\n  on: {actor: a, every: 1m}\n  2026: {actor: a, every: 1m}\n"
    )
    assert list(parsed.schedules) == ["on", "2026"]


def test_args_and_kwargs_take_nested_plain_json() -> None:
    spec = parse_one(
        'actor: a\nevery: 1m\nargs: [1, 2.5, "x", true, null, [1], {k: v}]\n'
        "kwargs: {deep: {list: [1, {a: null}]}}\n"
    )
    assert spec.args == (1, 2.5, "x", True, None, [1], {"k": "v"})
    assert spec.kwargs == {"deep": {"list": [1, {"a": None}]}}


def test_six_field_cron_with_seconds_is_accepted() -> None:
    assert parse_one('actor: a\ncron: "*/10 * * * * *"\n').cron == "*/10 * * * * *"


def test_load_schedules_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text("schedules:\n  a: {actor: a, every: 1m}\n", encoding="utf-8")
    parsed = load_schedules(path)
    assert parsed.path == str(path)
    assert parsed.schedules["a"].file == str(path)


# ------------------------------------------------------------- the file itself


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_schedules(path)
    assert [str(p) for p in info.value.problems] == [f"{path}:1: file not found"]


def test_problems_name_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "cron.yaml"
    path.write_text("schedules:\n  a: {actor: a}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_schedules(path)
    assert str(info.value) == f"{path}:2: schedule 'a': needs one of cron, every or at"


def test_yaml_syntax_error_reports_its_line() -> None:
    found = one_problem("schedules:\n  a:\n    actor: a\n   every: [1m\n")
    assert found.startswith("schedules.yaml:4: invalid YAML: ")


def test_unquoted_star_gets_a_quoting_hint() -> None:
    found = one_problem("schedules:\n  a:\n    actor: a\n    cron: */5 * * * *\n")
    assert found.startswith("schedules.yaml:4: invalid YAML: ")
    assert "must be quoted" in found


def test_unreadable_characters_are_a_problem_not_a_traceback() -> None:
    found = one_problem("schedules: {}\n# \x00\n")
    assert found.startswith("schedules.yaml:2: invalid YAML: ")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"schedules: {}\n# \xff\n")
    with pytest.raises(ConfigError) as info:
        load_schedules(path)
    # At the bad byte's own line (main said line 1 whatever the line).
    assert str(info.value) == (
        f"{path}:2: cannot read file: not valid UTF-8 (byte 0xff at column 3); save it as UTF-8"
    )


def test_merge_keys_are_refused() -> None:
    text = "x: &base {actor: a}\nschedules:\n  a:\n    <<: *base\n    every: 1m\n"
    assert problems(text) == [
        "schedules.yaml:1: unknown top-level key 'x'",
        "schedules.yaml:3: schedule 'a': needs an 'actor' (the name of a Dramatiq actor)",
        "schedules.yaml:4: schedule 'a': YAML merge keys ('<<') are not supported; use 'defaults'",
    ]


def test_empty_file_is_refused() -> None:
    assert one_problem("") == "schedules.yaml:1: file is empty: expected a mapping with 'schedules'"


def test_top_level_must_be_a_mapping() -> None:
    assert one_problem("- a\n- b\n") == (
        "schedules.yaml:1: the top level must be a mapping with 'imports' and 'schedules'"
    )


def test_missing_schedules_key_is_refused() -> None:
    assert one_problem("imports: [a]\n") == (
        "schedules.yaml:1: missing 'schedules' (write 'schedules: {}' to run nothing)"
    )


def test_unknown_top_level_key_with_hint() -> None:
    assert one_problem("schedules: {}\nimport: [a]\n") == (
        "schedules.yaml:2: unknown top-level key 'import' (did you mean 'imports'?)"
    )


def test_schedules_must_be_a_mapping() -> None:
    assert one_problem("schedules: [a]\n") == (
        "schedules.yaml:1: schedules must be a mapping of name -> settings"
    )


def test_schedule_must_be_a_mapping() -> None:
    assert one_problem("schedules:\n  a: heartbeat\n") == (
        "schedules.yaml:2: schedule 'a': must be a mapping of settings "
        "(actor, and one of cron, every or at)"
    )


# ---------------------------------------------------------------- duplicates


def test_duplicate_schedule_names_report_both_lines() -> None:
    text = """\
    schedules:
      nightly:
        actor: a
        every: 1h
      other: {actor: b, every: 1h}
      nightly:
        actor: c
        every: 2h
    """
    assert one_problem(text) == (
        "schedules.yaml:6: duplicate schedule name 'nightly' (first defined at line 2)"
    )


def test_duplicate_keys_in_a_schedule() -> None:
    found = one_problem(schedule("actor: a\nevery: 1m\nqueue: x\nqueue: y\n"))
    assert found == "schedules.yaml:7: schedule 'job': duplicate key 'queue' (first at line 6)"


def test_duplicate_top_level_key() -> None:
    found = one_problem("schedules: {}\nimports: [a]\nschedules: {}\n")
    assert found == "schedules.yaml:3: duplicate key 'schedules' (first at line 1)"


def test_duplicate_kwargs_key() -> None:
    found = one_problem(schedule("actor: a\nevery: 1m\nkwargs:\n  x: 1\n  x: 2\n"))
    assert found == "schedules.yaml:8: schedule 'job': kwargs: duplicate key 'x' (first at line 7)"


# ----------------------------------------------------------------- keys/names


def test_unknown_schedule_key_with_hint() -> None:
    found = one_problem(schedule("actor: a\nevery: 1m\nmax_retry: 2\n"))
    assert (
        found
        == "schedules.yaml:6: schedule 'job': unknown key 'max_retry' (did you mean 'max_retries'?)"
    )


def test_unknown_key_without_close_match_has_no_hint() -> None:
    found = one_problem(schedule("actor: a\nevery: 1m\nzzz: 2\n"))
    assert found == "schedules.yaml:6: schedule 'job': unknown key 'zzz'"


def test_unknown_default_key_with_hint() -> None:
    found = one_problem("defaults:\n  queue: q\n  jiter: 5s\nschedules: {}\n")
    assert found == "schedules.yaml:3: defaults: unknown key 'jiter' (did you mean 'jitter'?)"


def test_schedule_only_key_in_defaults() -> None:
    found = one_problem("defaults:\n  actor: a\nschedules: {}\n")
    assert (
        found
        == "schedules.yaml:2: defaults: 'actor' cannot have a default; set it in each schedule"
    )


@pytest.mark.parametrize("name", ["-x", "_x", ".x", "a b", "a/b", "a:b", "ä", "a" * 65, "''"])
def test_bad_schedule_names(name: str) -> None:
    found = one_problem(schedule("actor: a\nevery: 1m\n", name=name))
    shown = "" if name == "''" else name
    assert found == (
        f"schedules.yaml:3: schedule '{shown}': bad schedule name: use 1-64 letters, digits, "
        "'-', '_' or '.', starting with a letter or digit"
    )


# -------------------------------------------------------------- actor/trigger


def test_actor_is_required() -> None:
    assert one_problem(schedule("every: 1m\n")) == (
        "schedules.yaml:3: schedule 'job': needs an 'actor' (the name of a Dramatiq actor)"
    )


def test_actor_must_be_a_string() -> None:
    assert one_problem(schedule("actor: 5\nevery: 1m\n")) == (
        "schedules.yaml:4: schedule 'job': actor must be a non-empty string, got 5"
    )
    assert one_problem(schedule("actor:\nevery: 1m\n")) == (
        "schedules.yaml:4: schedule 'job': actor must be a non-empty string, got nothing"
    )
    assert one_problem(schedule("actor: [a]\nevery: 1m\n")) == (
        "schedules.yaml:4: schedule 'job': actor: expected a single value, not a list or mapping"
    )


@pytest.mark.parametrize("actor", ["actors.digest:send", "actors/digest.py"])
def test_actor_import_path_is_refused(actor: str) -> None:
    found = one_problem(schedule(f"actor: {actor}\nevery: 1m\n"))
    assert found.startswith(f"schedules.yaml:4: schedule 'job': actor '{actor}' looks like")
    assert "name the Dramatiq actor, not an import path" in found


def test_no_trigger() -> None:
    assert one_problem(schedule("actor: a\n")) == (
        "schedules.yaml:3: schedule 'job': needs one of cron, every or at"
    )


def test_two_triggers_reported_at_the_later_one() -> None:
    assert one_problem(schedule("actor: a\nat: 2026-01-01\nevery: 1m\n")) == (
        "schedules.yaml:6: schedule 'job': has both 'every' and 'at'; use exactly one"
    )


def test_cron_and_every() -> None:
    assert one_problem(schedule('actor: a\nevery: 1m\ncron: "0 * * * *"\n')) == (
        "schedules.yaml:6: schedule 'job': has both 'cron' and 'every'; use exactly one"
    )


def test_three_triggers() -> None:
    found = one_problem(schedule('actor: a\nat: 2026-01-01\nevery: 1m\ncron: "0 * * * *"\n'))
    assert found == (
        "schedules.yaml:7: schedule 'job': has 'cron', 'every' and 'at'; use exactly one"
    )


def test_bad_cron_reports_the_cron_parser_message() -> None:
    found = one_problem(schedule('actor: a\ncron: "61 * * * *"\n'))
    # The wording is services.schedules.cron's; we promise the line, the schedule, the expression
    # (once) and the field at fault.
    assert found.startswith("schedules.yaml:5: schedule 'job': bad cron")
    assert found.count("'61 * * * *'") == 1
    assert "minute" in found


def test_cron_must_be_a_string() -> None:
    assert one_problem(schedule("actor: a\ncron: 5\n")) == (
        "schedules.yaml:5: schedule 'job': cron must be a non-empty string, got 5"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0s", "every: duration '0s' must be greater than zero"),
        ("-5m", "every: duration '-5m' is negative"),
        ("soon", "every: bad duration 'soon': use a number and a unit"),
        ("15", "every: duration must be a string like '30s', '15m' or '1h', got 15"),
    ],
)
def test_bad_every(value: str, message: str) -> None:
    found = one_problem(schedule(f"actor: a\nevery: {value}\n"))
    assert found.startswith(f"schedules.yaml:5: schedule 'job': {message}")


# ---------------------------------------------------------------------- times


@pytest.mark.parametrize("key", ["at", "start", "end"])
def test_bad_time(key: str) -> None:
    trigger = "" if key == "at" else "every: 1m\n"
    found = one_problem(schedule(f"actor: a\n{trigger}{key}: 2026-13-01T09:00\n"))
    line = 5 if key == "at" else 6
    assert found == (
        f"schedules.yaml:{line}: schedule 'job': {key}: bad time '2026-13-01T09:00': "
        "expected ISO 8601 like 2026-12-01T09:00:00+01:00"
    )


def test_time_must_be_a_string() -> None:
    found = one_problem(schedule("actor: a\nat: 1700000000\n"))
    assert found.startswith("schedules.yaml:5: schedule 'job': at: bad time '1700000000'")


def test_end_must_be_after_start() -> None:
    found = one_problem(
        schedule("actor: a\nevery: 1m\nstart: 2026-06-01T00:00Z\nend: 2026-06-01T02:00+03:00\n")
    )
    assert found == (
        "schedules.yaml:7: schedule 'job': end (2026-06-01T02:00:00+03:00) "
        "must be after start (2026-06-01T00:00:00+00:00)"
    )


def test_start_and_end_are_refused_with_at() -> None:
    found = problems(schedule("actor: a\nat: 2026-06-01\nstart: 2026-01-01\nend: 2027-01-01\n"))
    assert found == [
        "schedules.yaml:6: schedule 'job': 'start' only applies to cron and every schedules; "
        "an 'at' schedule fires once",
        "schedules.yaml:7: schedule 'job': 'end' only applies to cron and every schedules; "
        "an 'at' schedule fires once",
    ]


def test_unknown_time_zone() -> None:
    assert one_problem(schedule("actor: a\nevery: 1m\ntimezone: Mars/Olympus\n")) == (
        "schedules.yaml:6: schedule 'job': timezone: unknown time zone 'Mars/Olympus'"
    )


def test_misspelt_time_zone_gets_a_hint() -> None:
    found = one_problem(schedule("actor: a\nevery: 1m\ntimezone: Europe/Berln\n"))
    assert found.endswith("unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)")


def test_time_zone_must_be_a_string() -> None:
    assert one_problem(schedule("actor: a\nevery: 1m\ntimezone: 1\n")) == (
        "schedules.yaml:6: schedule 'job': "
        "timezone must be an IANA name like 'Europe/Berlin', got 1"
    )


# ------------------------------------------------------------ execution keys


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "max_retries must be 0 or more, got -1"),
        ("true", "max_retries must be a whole number, got true"),
        ("'3'", "max_retries must be a whole number, got 3"),
        ("1.5", "max_retries must be a whole number, got 1.5"),
    ],
)
def test_bad_max_retries(value: str, message: str) -> None:
    assert one_problem(schedule(f"actor: a\nevery: 1m\nmax_retries: {value}\n")) == (
        f"schedules.yaml:6: schedule 'job': {message}"
    )


@pytest.mark.parametrize(
    "key", ["min_backoff", "max_backoff", "time_limit", "max_runtime", "catchup_window", "jitter"]
)
@pytest.mark.parametrize(
    ("value", "message"),
    [("0s", "duration '0s' must be greater than zero"), ("1x", "bad duration '1x'")],
)
def test_bad_durations(key: str, value: str, message: str) -> None:
    found = one_problem(schedule(f"actor: a\nevery: 1m\n{key}: {value}\n"))
    assert found.startswith(f"schedules.yaml:6: schedule 'job': {key}: {message}")


def test_min_backoff_must_not_exceed_max_backoff() -> None:
    assert one_problem(schedule("actor: a\nevery: 1m\nmax_backoff: 1m\nmin_backoff: 2m\n")) == (
        "schedules.yaml:6: schedule 'job': min_backoff (2m) must not be more than max_backoff (1m)"
    )


def test_max_backoff_below_the_default_min_backoff() -> None:
    assert one_problem(schedule("actor: a\nevery: 1m\nmax_backoff: 5s\n")) == (
        "schedules.yaml:6: schedule 'job': min_backoff (15s, the default) "
        "must not be more than max_backoff (5s)"
    )


def test_min_backoff_against_a_default_max_backoff() -> None:
    text = (
        "defaults: {max_backoff: 1m}\n"
        "schedules:\n  a:\n    actor: a\n    every: 1m\n    min_backoff: 2m\n"
    )
    assert one_problem(text) == (
        "schedules.yaml:6: schedule 'a': min_backoff (2m) must not be more than max_backoff (1m)"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("overlap", "skp", "overlap must be one of allow, skip, got 'skp' (did you mean 'skip'?)"),
        ("overlap", "never", "overlap must be one of allow, skip, got 'never'"),
        (
            "catchup",
            "latets",
            "catchup must be one of all, latest, none, got 'latets' (did you mean 'latest'?)",
        ),
        ("enabled", "maybe", "enabled must be true or false, got maybe"),
        ("enabled", "1", "enabled must be true or false, got 1"),
        (
            "queue",
            "'my queue'",
            "bad queue name 'my queue': use letters, digits, '_', '.' or "
            "'-', starting with a letter or '_'",
        ),
        ("queue", "[a]", "queue: expected a single value, not a list or mapping"),
        ("queue", "null", "queue must be a name like 'reports', got null"),
        ("queue", "1x", "bad queue name '1x'"),
    ],
)
def test_bad_execution_values(key: str, value: str, message: str) -> None:
    found = one_problem(schedule(f"actor: a\nevery: 1m\n{key}: {value}\n"))
    assert found.startswith(f"schedules.yaml:6: schedule 'job': {message}")


# ---------------------------------------------------------------- args/kwargs


def test_args_must_be_a_list() -> None:
    assert one_problem(schedule("actor: a\nevery: 1m\nargs: 5\n")) == (
        "schedules.yaml:6: schedule 'job': args must be a list, e.g. [1, \"x\"], got 5"
    )


def test_kwargs_must_be_a_mapping() -> None:
    assert one_problem(schedule("actor: a\nevery: 1m\nkwargs: [1]\n")) == (
        "schedules.yaml:6: schedule 'job': kwargs must be a mapping, e.g. {limit: 10}, got a list"
    )


def test_kwargs_keys_must_be_strings() -> None:
    found = one_problem(schedule("actor: a\nevery: 1m\nkwargs:\n  limit: 1\n  2: x\n"))
    assert found == "schedules.yaml:8: schedule 'job': kwargs keys must be strings, got 2"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1, .inf]", "args: '.inf' is not a plain JSON number"),
        (
            "[!!binary aGVsbG8=]",
            "args: YAML tag '!!binary' is not allowed: use plain values, lists and mappings",
        ),
        ("[{1: x}]", "args: mapping keys must be strings, got 1"),
        (
            "[!!python/name:os.system x]",
            "args: YAML tag '!!python/name:os.system' is not allowed: "
            "use plain values, lists and mappings",
        ),
    ],
)
def test_args_must_be_plain_json(value: str, message: str) -> None:
    assert one_problem(schedule(f"actor: a\nevery: 1m\nargs: {value}\n")) == (
        f"schedules.yaml:6: schedule 'job': {message}"
    )


def test_nested_non_json_is_reported_at_its_own_line() -> None:
    found = one_problem(schedule("actor: a\nevery: 1m\nkwargs:\n  a: 1\n  b:\n    - .nan\n"))
    assert found == "schedules.yaml:9: schedule 'job': kwargs: '.nan' is not a plain JSON number"


# -------------------------------------------------------------- imports/defaults


def test_imports_must_be_a_list() -> None:
    assert one_problem("imports: actors.digest\nschedules: {}\n") == (
        "schedules.yaml:1: imports must be a list of module names, e.g. [actors.digest]"
    )


def test_bad_import_names() -> None:
    found = problems(
        "imports:\n  - actors.ok\n  - actors/digest.py\n  - 3\n  - actors.ok\nschedules: {}\n"
    )
    assert found == [
        "schedules.yaml:3: imports: 'actors/digest.py' is not a module name "
        "(dotted, like actors.digest)",
        "schedules.yaml:4: imports: '3' is not a module name (dotted, like actors.digest)",
        "schedules.yaml:5: imports: 'actors.ok' is listed twice (first at line 2)",
    ]


def test_import_lines_point_at_each_module() -> None:
    parsed = parse_schedules("imports:\n  - actors.a\n  - actors.b\nschedules: {}\n")
    assert parsed.import_lines == {"actors.a": 2, "actors.b": 3}


def test_defaults_problems_have_no_schedule_and_are_reported_once() -> None:
    text = """\
    defaults:
      timezone: Mars/Olympus
      max_retries: -2
      overlap: maybe
    schedules:
      a: {actor: a, every: 1m}
      b: {actor: b, every: 1m}
    """
    assert problems(text) == [
        "schedules.yaml:2: defaults: timezone: unknown time zone 'Mars/Olympus'",
        "schedules.yaml:3: defaults: max_retries must be 0 or more, got -2",
        "schedules.yaml:4: defaults: overlap must be one of allow, skip, got 'maybe'",
    ]


def test_defaults_must_be_a_mapping() -> None:
    assert one_problem("defaults: [a]\nschedules: {}\n") == (
        "schedules.yaml:1: defaults: must be a mapping of settings"
    )


def test_defaults_backoff_checked_once_in_defaults() -> None:
    text = (
        "defaults:\n  min_backoff: 5m\n  max_backoff: 1m\nschedules:\n  a: {actor: a, every: 1m}\n"
    )
    assert one_problem(text) == (
        "schedules.yaml:3: defaults: min_backoff (5m) must not be more than max_backoff (1m)"
    )


# --------------------------------------------------------------- whole file


def test_all_problems_are_reported_sorted_by_line() -> None:
    text = """\
    schedules:
      b:
        actor: b
        every: 1m
        timezone: Nowhere/Land
      a:
        actor: a
        every: 1m
        bogus: 1
    imports: [actors.a]
    defaults:
      max_retries: -1
    """
    assert problems(text) == [
        "schedules.yaml:5: schedule 'b': timezone: unknown time zone 'Nowhere/Land'",
        "schedules.yaml:9: schedule 'a': unknown key 'bogus'",
        "schedules.yaml:12: defaults: max_retries must be 0 or more, got -1",
    ]


def test_a_file_with_one_problem_yields_nothing() -> None:
    text = "schedules:\n  good: {actor: a, every: 1m}\n  bad: {actor: b, every: never}\n"
    with pytest.raises(ConfigError) as info:
        parse_schedules(text)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].schedule == "bad"
    assert info.value.problems[0].line == 3


def test_messages_carry_no_python_reprs() -> None:
    found = problems(schedule("actor: {a: 1}\nevery: [1]\nqueue:\nenabled: {x: 1}\n"))
    assert found == [
        "schedules.yaml:4: schedule 'job': actor: expected a single value, not a list or mapping",
        "schedules.yaml:5: schedule 'job': every: expected a single value, not a list or mapping",
        "schedules.yaml:6: schedule 'job': queue must be a name like 'reports', got nothing",
        "schedules.yaml:7: schedule 'job': enabled: expected a single value, not a list or mapping",
    ]


# --------------------------------------------------------------- check_actors


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StubBroker]:
    """A StubBroker as the global broker, and tmp_path importable; both undone after."""
    stub = StubBroker()
    monkeypatch.setattr(dramatiq.broker, "global_broker", None)
    dramatiq.set_broker(stub)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield stub
    for name in set(sys.modules) - before:
        if name.startswith("cw_test_"):
            del sys.modules[name]
    stub.close()


def write_module(tmp_path: Path, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")


ACTORS_SOURCE = """\
import dramatiq

@dramatiq.actor
def send_digest():
    pass

@dramatiq.actor(actor_name="heartbeat")
def beat():
    pass
"""


def test_check_actors_passes_when_all_are_defined(tmp_path: Path, broker: StubBroker) -> None:
    write_module(tmp_path, "cw_test_ok", ACTORS_SOURCE)
    parsed = parse_schedules(
        "imports: [cw_test_ok]\nschedules:\n"
        "  a: {actor: send_digest, every: 1m}\n  b: {actor: heartbeat, every: 1m}\n"
    )
    assert check_actors(parsed, broker) == []
    assert broker.get_declared_actors() == {"send_digest", "heartbeat"}


def test_check_actors_reports_missing_actor_and_bad_import(
    tmp_path: Path, broker: StubBroker
) -> None:
    write_module(tmp_path, "cw_test_actors", ACTORS_SOURCE)
    write_module(tmp_path, "cw_test_broken", "import dramatiq\nraise RuntimeError('boom')\n")
    text = """\
    imports:
      - cw_test_actors
      - cw_test_missing
      - cw_test_broken
    schedules:
      digest:
        every: 1h
        actor: send_digest
      weekly:
        every: 1h
        actor: send_digst
    """
    parsed = parse_schedules(textwrap.dedent(text))
    found = [str(p) for p in check_actors(parsed, broker)]
    assert found == [
        "schedules.yaml:3: cannot import 'cw_test_missing': "
        "ModuleNotFoundError: No module named 'cw_test_missing'",
        "schedules.yaml:4: cannot import 'cw_test_broken': RuntimeError: boom",
        "schedules.yaml:11: schedule 'weekly': actor 'send_digst' is not defined "
        "(imports: cw_test_actors, cw_test_missing, cw_test_broken) "
        "(did you mean 'send_digest'?)",
    ]


def test_check_actors_with_no_imports(broker: StubBroker) -> None:
    parsed = ScheduleFile(
        path="s.yaml",
        imports=(),
        import_lines={},
        schedules={"a": ScheduleSpec(name="a", actor="x", trigger="every", line=7)},
    )
    # Without an actor line recorded it falls back to the schedule's own line.
    assert [str(p) for p in check_actors(parsed, broker)] == [
        "s.yaml:7: schedule 'a': actor 'x' is not defined (imports: none)"
    ]
