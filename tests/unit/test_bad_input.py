"""schedules.yaml as a hostile or careless user writes it: refused at a line, never a crash.

Each test names the item of issue 9 it covers; each input here got through on main (a
traceback, a catch-all ``XError``, a hang, gigabytes, a wrong line, or "OK").
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import dramatiq.broker
import pytest
from dramatiq.brokers.stub import StubBroker

from services.errors import ConfigError
from services.schedules import yaml_reader
from services.schedules.actors import check_actors
from services.schedules.limits import MAX_ALIAS_VALUES, MAX_DEPTH, MAX_FILE_BYTES
from services.schedules.loader import load_schedules, parse_schedules
from services.schedules.triggers import build_trigger


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_schedules(text)
    found = [str(p) for p in info.value.problems]
    lines = text.count("\n") + 1
    for problem in found:
        where, _, _ = problem.partition(": ")
        assert where.startswith("schedules.yaml:"), problem
        assert 1 <= int(where.split(":")[1]) <= lines, problem
        assert problem.isprintable(), problem  # one line, no control characters
    return found


def one(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def schedule(body: str) -> str:
    """A file whose one schedule 'job' has the settings ``body`` (from line 4)."""
    return "imports: [m]\nschedules:\n  job:\n" + textwrap.indent(textwrap.dedent(body), "    ")


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with libyaml's parser and with PyYAML's own: they must agree."""
    if request.param == "pure-python":
        monkeypatch.setattr(yaml_reader, "_FastLoader", None)
    elif yaml_reader._FastLoader is None:
        pytest.skip("PyYAML was built without libyaml here")
    yield request.param


# --------------------------------------------------------------- 9.2 aliases


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{refs}]")
    anchors = "\n".join("      " + line for line in lines)
    return schedule(f"actor: a\nevery: 1m\nkwargs:\n{anchors}\n")


def test_aliases_cannot_expand_without_bound(loader: str) -> None:
    # main: nine levels of nine aliases ran `check` out of 3 GiB.
    started = time.process_time()
    found = one(billion_laughs())
    assert time.process_time() - started < 2
    assert f"YAML aliases expand to more than {MAX_ALIAS_VALUES:,} values" in found
    assert found.startswith("schedules.yaml:")


def test_one_alias_used_by_many_schedules_is_bounded_over_the_file() -> None:
    big = ", ".join(str(i) for i in range(2000))
    names = "\n".join(f"  s{i}: {{actor: a, every: 1m, args: *big}}" for i in range(60))
    text = f"schedules:\n  s: {{actor: a, every: 1m, args: &big [{big}]}}\n{names}\n"
    assert any("YAML aliases expand" in p for p in problems(text))


def test_a_few_aliases_are_fine() -> None:
    text = schedule("actor: a\nevery: 1m\nargs: [&x {k: [1, 2]}, *x, *x]\n")
    assert parse_schedules(text).schedules["job"].args == ({"k": [1, 2]},) * 3


def test_recursive_aliases_are_refused(loader: str) -> None:
    # main: RecursionError, shown as the catch-all "cronwork: RecursionError: ...".
    for value in ("&a [1, *a]", "&m {k: *m}"):
        found = one(schedule(f"actor: a\nevery: 1m\nargs: [{value}]\n"))
        assert "refers to a value that contains it" in found or "nesting deeper" in found


# --------------------------------------------------------------- 9.7 nesting


@pytest.mark.parametrize("levels", [MAX_DEPTH, 1000, 100_000])
def test_deep_nesting_is_refused_at_a_line(loader: str, levels: int) -> None:
    # main: 1,000 levels raised RecursionError (the catch-all XError message).
    found = one(schedule(f"actor: a\nevery: 1m\nargs: {'[' * levels}{']' * levels}\n"))
    assert found.startswith("schedules.yaml:6: ")
    assert f"nesting deeper than {MAX_DEPTH} levels" in found or "nesting depth" in found


def test_block_style_nesting_is_refused_too(loader: str) -> None:
    body = "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n"
    found = one(schedule("actor: a\nevery: 1m\nkwargs:\n" + textwrap.indent(body, "  ")))
    assert "nesting" in found


@pytest.mark.parametrize("item", ["1", "!!str a", "{}"])
def test_a_file_of_too_many_values_is_refused_before_it_fills_memory(
    loader: str, item: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file of "1," items packs 16 million values (4 GB of tree) into the size limit.
    monkeypatch.setattr(yaml_reader, "MAX_NODES", 1000)
    text = f"schedules: {{}}\nx:\n  - [{', '.join([item] * 1200)}]\n"
    assert one(text) == "schedules.yaml:3: more than 1,000 values in one file"


def test_nesting_within_the_limit_is_fine() -> None:
    depth = MAX_DEPTH - 5  # root, schedules, the schedule and args take four levels
    spec = parse_schedules(schedule(f"actor: a\nevery: 1m\nargs: {'[' * depth}{']' * depth}\n"))
    assert spec.schedules["job"].args


# ------------------------------------------------------ 9.7 tags and numbers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[!!int abc]", "'abc' is not a valid !!int"),  # main: ValueError
        ("[!!float abc]", "'abc' is not a valid !!float"),
        ("[!!python/list [1]]", "YAML tag '!!python/list' is not allowed"),  # main: dropped
        ("[!!python/dict {a: 1}]", "YAML tag '!!python/dict' is not allowed"),
        ("[!!python/object:os.system {}]", "YAML tag '!!python/object:os.system' is not"),
        ("[!!set {a, b}]", "YAML tag '!!set' is not allowed"),
        ("[!!omap [a: 1]]", "YAML tag '!!omap' is not allowed"),
        ("[!!timestamp 2026-01-01]", "YAML tag '!!timestamp' is not allowed"),
        ("[!local x]", "YAML tag '!local' is not allowed"),
        ("!!python/tuple [1, 2]", "YAML tag '!!python/tuple' is not allowed"),
        ("[" + "9" * 5000 + "]", "is too long for a 64-bit integer"),  # main: ValueError
        ("[" + "9" * 30 + "]", "is too large for a 64-bit integer"),
        ("[0x" + "f" * 30 + "]", "is too large for a 64-bit integer"),
        # Accepted on main; Postgres's JSON then refused the schedule row at every sync.
        (r'["nul\0"]', "cannot hold a NUL or an unpaired surrogate character"),
        (r'[{"\ud800": 1}]', "cannot hold a NUL or an unpaired surrogate character"),
    ],
)
def test_tags_and_numbers_that_are_not_plain_json(loader: str, value: str, expected: str) -> None:
    found = one(schedule(f"actor: a\nevery: 1m\nargs: {value}\n"))
    assert found.startswith("schedules.yaml:6: schedule 'job': ")
    assert expected in found


def test_tags_are_refused_on_settings_and_keys_too() -> None:
    assert "YAML tag '!!python/str' is not allowed" in one(
        schedule("actor: !!python/str a\nevery: 1m\n")
    )
    assert "YAML tag '!!binary' is not allowed" in one(
        schedule("actor: a\nevery: 1m\n!!binary eA==: 1m\n")
    )
    assert "YAML tag '!!python/dict' is not allowed" in one(
        "schedules: !!python/dict {job: {actor: a, every: 1m}}\n"
    )
    assert "YAML tag '!!omap' is not allowed" in one(
        schedule("actor: a\nevery: 1m\nkwargs: !!omap [a: 1]\n")
    )


def test_explicit_plain_tags_are_fine() -> None:
    spec = parse_schedules(
        schedule('actor: !!str a\nevery: !!str 1m\nargs: [!!int "7", !!str 7]\n')
    )
    assert spec.schedules["job"].args == (7, "7")


# ------------------------------------------------------------ 9.7 time zones


@pytest.mark.parametrize(
    "zone",
    ["Europe", "../../../../etc/passwd", "/etc/localtime", "Europe/Berlin\\0", "", "Nope/Zone"],
)
def test_time_zones_that_are_not_zones(zone: str) -> None:
    # main: 'Europe' raised IsADirectoryError, printing a path inside the virtualenv.
    found = one(schedule(f'actor: a\nevery: 1m\ntimezone: "{zone}"\n'))
    assert "unknown time zone" in found
    assert ".venv" not in found and "site-packages" not in found


def test_a_five_megabyte_value_is_refused_quickly() -> None:
    # main: a 5 MB `timezone:` kept `check` busy for minutes (redaction, then difflib).
    started = time.process_time()
    found = one(schedule(f"actor: a\nevery: 1m\ntimezone: Europe/{'x' * 5_000_000}\n"))
    assert time.process_time() - started < 3
    assert "value is too long (5,000,007 characters; at most 200)" in found
    assert len(found) < 300


# ---------------------------------------------------- 9.3 ranges check holds


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # main: accepted; the leader then failed every tick and fired nothing at all.
        ("every: 3000000d\n", "every: duration '3000000d' is longer than 3650d"),
        ("at: 0001-01-01T00:00:00\n", "at: 0001-01-01T00:00:00+00:00 is outside the years"),
        ("at: 9999-12-31T23:59:59-12:00\n", "is outside the years cronwork fires in"),
        ("every: 1h\nstart: 1900-01-01\n", "start: 1900-01-01T00:00:00+00:00 is outside"),
        ("every: 1h\nend: 9999-12-31\n", "leave 'end' out to never end"),
        ("cron: '0 * * * *'\ncatchup_window: 100000d\n", "catchup_window: duration '100000d'"),
        ("every: 1h\njitter: 5000d\n", "jitter: duration '5000d' is longer than 3650d"),
        ("every: 1h\ngrace: 10000w\n", "grace: duration '10000w' is longer"),
    ],
)
def test_values_whose_fire_times_cannot_be_computed_are_refused(body: str, expected: str) -> None:
    found = one(schedule("actor: a\n" + body))
    assert expected in found


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        ("{succeeded: -1}", "keep: succeeded: must be a whole number from 0 to 1,000,000"),
        ("{failed: 1000001}", "keep: failed: must be a whole number from 0 to 1,000,000"),
        ("{failed: 1.5}", "keep: failed: must be a whole number"),
        ("{succeeded: true}", "keep: succeeded: must be a whole number"),
        ("{max_age: 0s}", "keep: max_age: duration '0s' must be greater than zero"),
        ("{max_age: 30}", "keep: max_age: duration must be a string like"),
        ("{max_age: 100000d}", "keep: max_age: duration '100000d' is longer than 3650d"),
        ("{maxage: 30d}", "keep: unknown key 'maxage' (did you mean 'max_age'?)"),
        ("{failed: 1, failed: 2}", "duplicate key 'failed'"),
        ("10", "keep must be a mapping, e.g. {succeeded: 10, failed: 50, max_age: 30d}"),
    ],
)
def test_keep_values_out_of_range_are_refused_at_their_line(keep: str, expected: str) -> None:
    assert one(schedule(f"actor: a\nevery: 1m\nkeep: {keep}\n")).startswith(
        "schedules.yaml:6: schedule 'job': "
    )
    assert expected in one(f"defaults: {{keep: {keep}}}\nschedules: {{}}\n")


@pytest.mark.parametrize(
    "body",
    [
        "every: 3650d\n",
        "at: 8999-12-31T23:59:59+14:00\n",
        "at: 1970-01-01T00:00:00Z\n",
        "every: 1h\nstart: 1970-01-01\nend: 8999-01-01\n",
        "cron: '59 23 31 12 *'\nend: 8999-12-31\ntimezone: Pacific/Kiritimati\n",
        "every: 500ms\ncatchup_window: 3650d\njitter: 3650d\n",
    ],
)
def test_values_at_the_limits_compute_fire_times(body: str) -> None:
    spec = parse_schedules(schedule("actor: a\n" + body)).schedules["job"]
    trigger = build_trigger(spec)
    for now in (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime.now(UTC),
        datetime(8999, 6, 1, tzinfo=UTC),
    ):
        t = trigger.get_next_fire_time(None, now)
        if t is not None:
            trigger.get_next_fire_time(t, t)
            assert t - spec.catchup_window - timedelta(days=1) < t  # representable arithmetic


# --------------------------------------------------------- 9.5 secrets in the file

HOOK_TOKEN = "XyZsecretTOKEN123"
URLS = [
    f"https://hooks.slack.com/services/T00/B00/{HOOK_TOKEN}",
    f"https://discord.com/api/webhooks/123/{HOOK_TOKEN}",
    f"https://user:{HOOK_TOKEN}@example.com/hook",
    f"https://example.com/hook?token={HOOK_TOKEN}",
]
PLACES = [
    "actor: a\nevery: 1m\nalerts: {{slack: {url}}}\n",
    "actor: a\nevery: 1m\nalerts: {{webhook_env: {url}}}\n",
    "actor: a\nevery: 1m\nalerts: {url}\n",
    "actor: a\nevery: 1m\nalerts: {{webhook: {url}}}\n",
    "actor: a\nevery: 1m\nalerts: {{{url}: true}}\n",
    "actor: a\nevery: 1m\nqueue: {url}\n",
    "actor: {url}\nevery: 1m\n",
    "actor: a\nevery: 1m\ntimezone: {url}\n",
    "actor: a\ncron: {url}\n",
    "actor: a\nevery: {url}\n",
    "actor: a\nat: {url}\n",
    "actor: a\nevery: 1m\n{url}: true\n",
    "actor: a\nevery: 1m\noverlap: {url}\n",
    "actor: a\nevery: 1m\nwebhook: {url}\n",
]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("place", PLACES)
def test_check_never_echoes_a_url_from_the_file(place: str, url: str) -> None:
    # main: a webhook URL under the wrong key was printed back (10 of 10 variants).
    text = schedule(place.format(url=f'"{url}"'))
    for problem in problems(text):
        assert HOOK_TOKEN not in problem
        assert "://" not in problem


def test_urls_as_names_and_top_level_keys_are_not_echoed() -> None:
    url = URLS[0]
    for text in (
        f'schedules:\n  "{url}": {{actor: a, every: 1m}}\n',
        f'"{url}": 1\nschedules: {{}}\n',
        f'imports: ["{url}"]\nschedules: {{}}\n',
        f'defaults: {{queue: "{url}"}}\nschedules: {{}}\n',
    ):
        for problem in problems(text):
            assert HOOK_TOKEN not in problem and "://" not in problem


def test_urls_in_args_are_values_like_any_other() -> None:
    spec = parse_schedules(schedule(f'actor: a\nevery: 1m\nkwargs: {{url: "{URLS[1]}"}}\n'))
    assert spec.schedules["job"].kwargs == {"url": URLS[1]}


# ----------------------------------------------- 9.9 lines and control characters


def test_an_unclosed_quote_is_reported_where_it_opens(loader: str) -> None:
    # main: at the end of the file (line 9 here).
    text = schedule('actor: "a\nevery: 1m\n') + "  other:\n    actor: b\n    every: 1m\n"
    found = one(text)
    assert found.startswith("schedules.yaml:4: invalid YAML: a quoted value starts here")


def test_an_unclosed_bracket_is_reported_where_it_opens(loader: str) -> None:
    text = schedule("actor: a\nevery: 1m\nargs: [1, 2,\n")
    found = one(text)
    assert found.startswith("schedules.yaml:6: invalid YAML: a '[' list starts here")
    text = schedule("actor: a\nevery: 1m\nkwargs: {a: 1\nqueue: q\n")
    assert one(text).startswith("schedules.yaml:6: invalid YAML: a '{' mapping starts here")


def test_invalid_utf8_is_reported_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"schedules:\n  a:\n    actor: a\n    every: 1m\n    queue: q\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_schedules(path)
    assert str(info.value).startswith(f"{path}:5: cannot read file: not valid UTF-8 (byte 0xe9")


@pytest.mark.parametrize(
    "escape", ["\\e[2J\\e[31m", "\\r", "\\0", "\\x9b", "\\u202e", "\\b\\b\\b", "\\n"]
)
def test_control_characters_from_escapes_are_escaped(escape: str) -> None:
    # main: YAML escapes became raw ANSI sequences, carriage returns and NULs on the terminal.
    for text in (
        schedule(f'actor: "x{escape}"\nevery: 1m\nqueue: "q{escape}"\n'),
        f'schedules:\n  "n{escape}": {{actor: a, every: 1m}}\n',
        schedule(f'actor: a\nevery: 1m\n"k{escape}": 1\n'),
    ):
        for problem in problems(text):
            assert problem.isprintable(), problem


def test_raw_control_characters_in_the_file_are_refused_at_their_line(loader: str) -> None:
    assert one("schedules: {}\n# \x1b[31m\n").startswith(
        "schedules.yaml:2: invalid YAML: character #x001b is not allowed"
    )


# -------------------------------------------------------- 9.7 the file itself


def test_a_fifo_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    # main: `CRONWORK_SCHEDULES_FILE=<a FIFO>` blocked for ever.
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        load_schedules(fifo)
    assert str(info.value) == f"{fifo}:1: cannot read file: it is a named pipe, not a regular file"


def test_a_device_is_refused_instead_of_read_until_memory_runs_out() -> None:
    with pytest.raises(ConfigError) as info:
        load_schedules("/dev/zero")
    assert str(info.value) == "/dev/zero:1: cannot read file: it is a device, not a regular file"


def test_a_directory_and_a_huge_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="it is a directory"):
        load_schedules(tmp_path)
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(ConfigError, match="file is larger than 32 MB"):
        load_schedules(huge)


# ----------------------------------------------------- 9.8 imports that exit


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StubBroker]:
    saved = dramatiq.broker.global_broker
    stub = StubBroker()
    dramatiq.set_broker(stub)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield stub
    dramatiq.broker.global_broker = saved


@pytest.mark.parametrize("code", ["0", "None", "'bye'", "3"])
def test_a_module_that_exits_when_imported_is_a_problem(
    tmp_path: Path, broker: StubBroker, code: str
) -> None:
    # main: `sys.exit(0)` in an imported module ended `check` with status 0 and no output.
    module = f"exits_{abs(hash(code))}"
    (tmp_path / f"{module}.py").write_text(f"import sys\nsys.exit({code})\n")
    parsed = parse_schedules(f"imports: [{module}]\nschedules: {{}}\n")
    found = [str(p) for p in check_actors(parsed, broker)]
    assert found == [
        f"schedules.yaml:1: cannot import '{module}': it calls sys.exit({code}) when imported"
    ]
    sys.modules.pop(module, None)


def test_an_import_error_with_control_characters_and_secrets_is_one_clean_line(
    tmp_path: Path, broker: StubBroker
) -> None:
    (tmp_path / "noisy_mod.py").write_text(
        "raise RuntimeError('\\x1b[31mpostgresql://u:pw-secret-1@db/x\\n' + 'y' * 5000)\n"
    )
    parsed = parse_schedules("imports: [noisy_mod]\nschedules: {}\n")
    (found,) = [str(p) for p in check_actors(parsed, broker)]
    assert found.isprintable() and "pw-secret-1" not in found and len(found) < 500
