"""Generated schedules.yaml files, good and hostile: what `check` must always do (issue 9).

Whatever a file holds, loading it either returns schedules whose fire times can all be
computed, or raises ConfigError whose every problem is one printable line naming the
file and a line inside it, without echoing a URL. Never another exception, never
unbounded time. Hypothesis builds the files from the classes of input issue 9 lists;
examples are bounded and derandomized so the suite stays fast and repeatable.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.errors import ConfigError
from services.scheduler.catchup import plan_fires
from services.schedules.loader import ScheduleFile, parse_schedules
from services.schedules.triggers import build_trigger
from services.schedules.values import KEEP_KEYS, SCHEDULE_KEYS

SECRET = "s3cretTOKENxyz"
URL = f"https://hooks.slack.com/services/T0/B0/{SECRET}"

BOUNDED = settings(
    max_examples=150,
    deadline=2000,  # ms per example: a file must never take long, whatever it holds
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def scalar_text(value: str) -> str:
    """A YAML double-quoted scalar (JSON's escapes are YAML's)."""
    return json.dumps(value)


#: Hostile values a user (or a paste) puts where a setting goes.
HOSTILE = st.one_of(
    st.sampled_from(
        [
            "3000000d",
            "0001-01-01T00:00:00",
            "9999-12-31T23:59:59-12:00",
            "Europe",
            "../../etc/passwd",
            "!!int abc",
            "!!python/object:os.system {}",
            "!!set {a}",
            "!!binary eA==",
            "&a [1, *a]",
            "*nowhere",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
            "9" * 5000,
            ".inf",
            ".nan",
            "-1",
            "0",
            "1e400",
            "''",
            "~",
            "{}",
            "[]",
            '"unclosed',
            "[1, 2",
            "{a: 1",
            URL,
            scalar_text(URL),
            scalar_text("\x1b[31mred\r\x00"),
            scalar_text("x" * 5000),
        ]
    ),
    st.text(max_size=40).map(scalar_text),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.from_regex(r"[0-9]{1,9}(ms|s|m|h|d|w)", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2})?", fullmatch=True),
)

KEYS = [*SCHEDULE_KEYS, "webhook", URL]

GOOD_TRIGGERS = st.sampled_from(
    ['cron: "*/5 * * * *"', "every: 15m", "every: 3650d", "at: 2030-01-01T00:00:00Z"]
)


@st.composite
def schedule_files(draw: st.DrawFn) -> str:
    """A file of a few schedules, each a good one with hostile settings mixed in."""
    lines = ["imports: [some.module]"]
    if draw(st.booleans()):
        lines.append(f"defaults: {{{draw(st.sampled_from(KEYS))}: {draw(HOSTILE)}}}")
    lines.append("schedules:")
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        name = draw(st.one_of(st.just(f"job{i}"), st.text(max_size=12).map(scalar_text)))
        lines.append(f"  {name}:")
        body = ["actor: tick", draw(GOOD_TRIGGERS)]
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            body.append(f"{draw(st.sampled_from(KEYS))}: {draw(HOSTILE)}")
        if draw(st.booleans()):  # a mapping-valued key with a hostile value inside
            body.append(f"keep: {{{draw(st.sampled_from(KEEP_KEYS))}: {draw(HOSTILE)}}}")
        lines += [f"    {line}" for line in draw(st.permutations(body))]
    text = "\n".join(lines) + "\n"
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]  # a cut-off file
    return text


def assert_refused_properly(text: str, error: ConfigError) -> None:
    lines = text.count("\n") + 1
    assert error.problems, "a ConfigError names at least one problem"
    for problem in error.problems:
        shown = str(problem)
        assert shown.startswith(f"schedules.yaml:{problem.line}: "), shown
        assert 1 <= problem.line <= lines, (problem.line, lines, shown)
        assert shown.isprintable(), shown
        assert SECRET not in shown and "://" not in shown, shown
        assert len(shown) < 1000, shown


def assert_fires_computable(parsed: ScheduleFile) -> None:
    """What `check` accepts, the scheduler can run: every trigger yields its times."""
    for spec in parsed.schedules.values():
        trigger = build_trigger(spec)
        for now in (datetime(1970, 1, 2, tzinfo=UTC), datetime(2026, 11, 29, tzinfo=UTC)):
            first = trigger.get_next_fire_time(None, now)
            if first is not None:
                plan_fires(trigger, first, first, policy=spec.catchup, window=spec.catchup_window)


def load(text: str) -> None:
    try:
        parsed = parse_schedules(text)
    except ConfigError as error:
        assert_refused_properly(text, error)
    else:
        assert_fires_computable(parsed)


@BOUNDED
@given(schedule_files())
def test_any_generated_file_is_loaded_or_refused_at_its_lines(text: str) -> None:
    load(text)


@BOUNDED
@given(st.text(max_size=300))
def test_any_text_at_all_is_loaded_or_refused_at_its_lines(text: str) -> None:
    load(text)


#: Strings written as they are into the file (raw control characters are not YAML; NUL
#: and lone surrogates are refused, see test_bad_input).
STORABLE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")),
    max_size=5,
)


@settings(max_examples=60, deadline=2000, derandomize=True)
@given(
    st.recursive(
        st.one_of(st.integers(-(2**63), 2**63 - 1), STORABLE_TEXT, st.booleans(), st.none()),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(STORABLE_TEXT, inner, max_size=3)
        ),
        max_leaves=30,
    )
)
def test_plain_json_args_round_trip(value: object) -> None:
    text = textwrap.dedent(
        f"""\
        schedules:
          job:
            actor: tick
            every: 1m
            args: [{json.dumps(value, ensure_ascii=False)}]
        """
    )
    parsed = parse_schedules(text)
    assert parsed.schedules["job"].args == (value,)
