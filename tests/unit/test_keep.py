"""``keep:`` in schedules.yaml: each key optional, inherited from ``defaults:`` key by key."""

from __future__ import annotations

import textwrap
from datetime import timedelta

from services.schedules.loader import parse_schedules
from services.schedules.spec import KeepPolicy, ScheduleSpec

FILE = textwrap.dedent(
    """\
    defaults:
      keep: {failed: 50, max_age: 30d}
    schedules:
      counts: {actor: a, every: 1m, keep: {succeeded: 10, failed: 0}}
      ages:
        actor: a
        every: 1m
        keep:
          max_age: 1w
      plain: {actor: a, every: 1m}
    """
)


def test_keep_is_inherited_key_by_key() -> None:
    specs = parse_schedules(FILE).schedules
    assert specs["counts"].keep == KeepPolicy(succeeded=10, failed=0, max_age=timedelta(days=30))
    assert specs["ages"].keep == KeepPolicy(failed=50, max_age=timedelta(weeks=1))
    assert specs["plain"].keep == KeepPolicy(failed=50, max_age=timedelta(days=30))


def test_no_keep_leaves_everything_to_the_global_default() -> None:
    spec = parse_schedules("schedules:\n  job: {actor: a, every: 1m}\n").schedules["job"]
    assert spec.keep == KeepPolicy()
    assert spec.to_json()["keep"] == {"succeeded": None, "failed": None, "max_age": None}


def test_over_fills_only_what_is_unset() -> None:
    base = KeepPolicy(succeeded=1, failed=2, max_age=timedelta(days=3))
    assert KeepPolicy().over(base) == base
    assert KeepPolicy(succeeded=0).over(base) == KeepPolicy(0, 2, timedelta(days=3))


def test_keep_is_part_of_the_fingerprint_not_the_trigger() -> None:
    a = ScheduleSpec(name="j", actor="a", trigger="every", every=timedelta(minutes=1))
    b = ScheduleSpec(
        name="j", actor="a", trigger="every", every=timedelta(minutes=1), keep=KeepPolicy(1)
    )
    assert a.fingerprint() != b.fingerprint()
    assert a.trigger_fingerprint() == b.trigger_fingerprint()
