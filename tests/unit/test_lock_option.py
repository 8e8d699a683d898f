"""The ``lock:`` option of schedules.yaml: validated at its line, carried in the message."""

from __future__ import annotations

from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from services.broker import standard_middleware
from services.constants import LOCK_OPTION
from services.errors import ConfigError
from services.fire_message import build_message
from services.schedules.actors import check_actors
from services.schedules.loader import parse_schedules
from services.vocabulary import FireKind

HEAD = "schedules:\n  sync:\n    actor: sync_region\n    every: 1m\n"


def test_a_lock_is_validated_and_travels_in_the_message() -> None:
    sf = parse_schedules(
        HEAD + '    kwargs: {region: eu}\n    lock: {key: "sync-{region}", ttl: 10m}\n'
    )
    spec = sf.schedules["sync"]
    assert spec.lock == {
        "key": "sync-{region}",
        "ttl": 600.0,
        "on_busy": "skip",
        "timeout": None,
        "extend": True,
    }
    message = build_message(spec, datetime(2026, 1, 1, tzinfo=UTC), FireKind.SCHEDULED)
    assert message["options"][LOCK_OPTION] == spec.lock
    assert (
        LOCK_OPTION
        not in build_message(
            parse_schedules(HEAD).schedules["sync"],
            datetime(2026, 1, 1, tzinfo=UTC),
            FireKind.SCHEDULED,
        )["options"]
    )


@pytest.mark.parametrize(
    ("lock", "says"),
    [
        ("{key: x}", "lock: ttl required"),
        ("{key: x, ttl: 0s}", "must be greater than zero"),
        ("{key: x, ttl: 1m, colour: red}", "lock: unknown key 'colour'"),
        ("[x]", "lock must be a mapping"),
        ("{key: [x], ttl: 1m}", "lock: key: expected a single value"),
        ('{key: "a{", ttl: 1m}', "is not a valid template"),
        ("{key: x, ttl: 1m, on_busy: later}", "on_busy must be one of skip, wait, raise"),
        ("{key: x, ttl: 1m, timeout: 5s}", "timeout only applies with on_busy: wait"),
    ],
)
def test_a_bad_lock_is_refused_at_its_line(lock: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_schedules(HEAD + f"    lock: {lock}\n")
    [problem] = refused.value.problems
    assert (problem.line, problem.schedule) == (5, "sync")
    assert says in problem.message


def test_a_lock_key_naming_no_argument_of_the_actor_is_refused_by_check() -> None:
    broker = StubBroker(middleware=standard_middleware())
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name="sync_region", broker=broker)
    def sync_region(region: str) -> None: ...

    good = parse_schedules(HEAD + '    lock: {key: "sync-{region}", ttl: 1m}\n')
    assert check_actors(good, broker) == []
    bad = parse_schedules(HEAD + '    lock: {key: "sync-{zone}", ttl: 1m}\n')
    [problem] = check_actors(bad, broker)
    assert (problem.line, problem.schedule) == (3, "sync")
    assert "names zone, not an argument of" in problem.message
