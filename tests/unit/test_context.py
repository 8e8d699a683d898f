"""services.context: the fire a worker thread runs, and an actor's wish to be recorded skipped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from services.context import (
    FireInfo,
    _set_current,
    current_fire,
    mark_skipped,
    take_skip_reason,
)


def fire(attempt: int = 0) -> FireInfo:
    return FireInfo(
        schedule="sync",
        scheduled_for=datetime(2026, 11, 30, 6, 0, tzinfo=UTC),
        kind="scheduled",
        fire_id=7,
        message_id="m-1",
        attempt=attempt,
    )


@pytest.fixture(autouse=True)
def _no_fire_left() -> Iterator[None]:
    yield
    take_skip_reason()
    _set_current(None)


def test_mark_skipped_outside_a_fire_does_nothing() -> None:
    assert current_fire() is None
    assert mark_skipped("nothing to do") is False
    assert take_skip_reason() is None


def test_mark_skipped_reaches_the_fire_context_once() -> None:
    _set_current(fire())
    assert take_skip_reason() is None
    assert mark_skipped("lock 'sync' is held by host-1") is True
    assert mark_skipped("a later reason") is True  # the first one decided
    _set_current(None)  # tracking may clear the fire before it reads the reason
    assert take_skip_reason() == "lock 'sync' is held by host-1"
    assert take_skip_reason() is None  # taken: not reported twice


def test_a_new_fire_does_not_inherit_an_untaken_reason() -> None:
    _set_current(fire(attempt=0))
    mark_skipped("stale")
    _set_current(None)
    _set_current(fire(attempt=1))
    assert take_skip_reason() is None


def test_skip_reasons_are_per_thread() -> None:
    _set_current(fire())
    mark_skipped("this thread")
    seen: list[str | None] = []

    def other() -> None:
        _set_current(fire())
        seen.append(take_skip_reason())
        _set_current(None)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [None]
    assert take_skip_reason() == "this thread"
