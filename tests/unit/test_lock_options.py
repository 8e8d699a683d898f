"""Lock options without any IO: durations, key templates, the yaml mapping, the decorator's
checks at decoration time, and configuration before use."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from services.errors import LockError, LockOptionsError
from services.locks import Lock, LockOptions, OnBusy, locked
from services.locks.config import _reset, configure
from services.settings import Settings


@pytest.fixture(autouse=True)
def _unconfigured() -> Iterator[None]:
    _reset()
    yield
    _reset()


# -- durations and policies -------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [(30, 30.0), (0.25, 0.25), ("5m", 300.0), ("1h30m", 5400.0), (timedelta(seconds=2), 2.0)],
)
def test_ttl_takes_seconds_durations_and_timedeltas(ttl: Any, seconds: float) -> None:
    assert LockOptions.of("k", ttl=ttl).ttl == seconds
    assert Lock("k", ttl=ttl).ttl == seconds


@pytest.mark.parametrize(
    ("ttl", "says"),
    [
        (0, "greater than zero"),
        (-1, "greater than zero"),
        (float("nan"), "greater than zero"),
        ("0s", "greater than zero"),
        ("soon", "bad duration"),
        (True, "seconds or a duration"),
        (None, "seconds or a duration"),
        (0.0001, "shorter than a millisecond"),
    ],
)
def test_bad_ttls_are_refused_saying_why(ttl: Any, says: str) -> None:
    with pytest.raises(LockOptionsError, match=says):
        LockOptions.of("k", ttl=ttl)
    with pytest.raises(LockOptionsError, match=says):
        Lock("k", ttl=ttl)


def test_on_busy_policies_and_their_defaults() -> None:
    assert LockOptions.of("k", ttl=1).on_busy is OnBusy.SKIP  # decorator and yaml
    assert Lock("k", ttl=1).on_busy is OnBusy.RAISE  # a with-block cannot skip its body
    assert Lock("k", ttl=1, on_busy="wait").timeout == 1.0  # waits one TTL by default
    assert Lock("k", ttl=1, on_busy="wait", timeout="2s").timeout == 2.0
    with pytest.raises(LockOptionsError, match="one of skip, wait, raise"):
        Lock("k", ttl=1, on_busy="block")
    with pytest.raises(LockOptionsError, match="only applies with on_busy: wait"):
        Lock("k", ttl=1, timeout=5)
    with pytest.raises(LockOptionsError, match="non-empty"):
        Lock("", ttl=1)


# -- key templates ----------------------------------------------------------------------


def sync(region: str, full: bool = False, *rest: Any, **extra: Any) -> None: ...


def invoice(customer_id: int, amount: float = 0.0) -> None: ...


def test_key_for_fills_names_from_positional_and_keyword_arguments() -> None:
    options = LockOptions.of("invoice-{customer_id}", ttl=60).for_function(invoice)
    assert options.key_for((42,), {}) == "invoice-42"
    assert options.key_for((), {"customer_id": 42, "amount": 1.5}) == "invoice-42"
    assert options.key_for([7, 2.0]) == "invoice-7"


def test_key_for_uses_defaults_index_access_and_var_keywords() -> None:
    options = LockOptions.of("sync-{region}-{full}-{tenant}", ttl=60).for_function(sync)
    assert options.key_for(("eu",), {"tenant": "acme"}) == "sync-eu-False-acme"
    nested = LockOptions.of("sync-{region[0]}", ttl=1).for_function(sync)
    assert nested.key_for(("eu",)) == "sync-e"


def test_key_for_without_a_function_knows_only_keyword_arguments() -> None:
    options = LockOptions.from_mapping({"key": "sync-{region}", "ttl": "10m"})
    assert options.key_for((), {"region": "eu"}) == "sync-eu"
    with pytest.raises(LockOptionsError, match="names region, which this call does not pass"):
        options.key_for(("eu",), {})


def test_a_call_that_does_not_fit_the_signature_fails_as_the_call_would() -> None:
    options = LockOptions.of("invoice-{customer_id}", ttl=60).for_function(invoice)
    with pytest.raises(TypeError):
        options.key_for((1, 2, 3), {})


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("sync-{}", "must name an argument"),
        ("sync-{0}", "must name an argument"),
        ("sync-{region", "not a valid template"),
        ("sync-}", "not a valid template"),
        ("  ", "non-empty"),
    ],
)
def test_bad_templates_are_refused(key: str, says: str) -> None:
    with pytest.raises(LockOptionsError, match=says):
        LockOptions.of(key, ttl=1)


def test_a_template_naming_an_unknown_argument_is_refused_at_decoration() -> None:
    refused = r"names customer, not an argument of .*send_invoice\(customer_id\)"
    with pytest.raises(LockOptionsError, match=refused):

        @locked("invoice-{customer}", ttl="5m")
        def send_invoice(customer_id: int) -> None: ...

    # A function taking **kwargs may receive any name: checked per call instead.
    @locked("invoice-{customer}", ttl="5m")
    def flexible(**kwargs: Any) -> None: ...


def test_the_decorator_refuses_coroutines_and_actors() -> None:
    with pytest.raises(LockOptionsError, match="coroutine"):

        @locked("k", ttl=1)
        async def job() -> None: ...

    broker = StubBroker()
    with pytest.raises(LockOptionsError, match="below"):
        locked("k", ttl=1)(dramatiq.actor(broker=broker, actor_name="a")(lambda: None))


def test_the_decorator_keeps_the_function_s_name_and_signature() -> None:
    @locked("invoice-{customer_id}", ttl=60)
    def send_invoice(customer_id: int) -> int:
        """Send one."""
        return customer_id

    assert send_invoice.__name__ == "send_invoice"
    assert send_invoice.__doc__ == "Send one."


# -- the schedules.yaml mapping ---------------------------------------------------------


def test_from_mapping_reads_the_yaml_option() -> None:
    options = LockOptions.from_mapping({"key": "sync-{region}", "ttl": "10m", "on_busy": "skip"})
    assert options == LockOptions(key="sync-{region}", ttl=600.0, on_busy=OnBusy.SKIP)
    waiting = LockOptions.from_mapping(
        {"key": "k", "ttl": 30, "on_busy": "wait", "timeout": "1m", "extend": False}
    )
    assert (waiting.on_busy, waiting.timeout, waiting.extend) == (OnBusy.WAIT, 60.0, False)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("sync", "must be a mapping"),
        ({"key": "k"}, "ttl required"),
        ({"ttl": "1m"}, "key required"),
        ({"key": "k", "ttl": "1m", "tll": 1}, r"unknown option\(s\) tll"),
        ({"key": "k", "ttl": "1m", "on_busy": "queue"}, "one of skip, wait, raise"),
        ({"key": "k", "ttl": "1m", "extend": "yes"}, "true or false"),
        ({"key": 5, "ttl": "1m"}, "non-empty string"),
    ],
)
def test_from_mapping_refuses_bad_options(data: Any, says: str) -> None:
    with pytest.raises(LockOptionsError, match=says):
        LockOptions.from_mapping(data)


def test_an_options_error_is_a_value_error_for_the_loader() -> None:
    with pytest.raises(ValueError):
        LockOptions.from_mapping({"key": "k"})


# -- configuration ----------------------------------------------------------------------


def test_a_lock_before_configure_says_what_to_call() -> None:
    with pytest.raises(LockError, match=r"call services\.locks\.configure"):
        Lock("k", ttl=1).acquire()


def test_configure_takes_settings_or_urls_not_both() -> None:
    with pytest.raises(LockError, match="settings, or redis_url"):
        configure(Settings(redis_prefix="p"), prefix="q")


def test_embedded_locks_are_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="services.locks")
    configure(Settings(redis_url=None))
    configure(redis_url=None)
    said = [r for r in caplog.records if "process-local" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "INFO"
    with Lock("k", ttl=1) as held:
        assert held
