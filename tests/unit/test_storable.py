"""What a worker writes about an attempt is text and JSON Postgres accepts, whatever the job
raised or returned."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from services.worker.outcomes import jsonable, storable


@given(st.text())
def test_storable_text_is_utf8_without_nul(text: str) -> None:
    out = storable(text)
    out.encode("utf-8")  # raises on half a surrogate pair
    assert "\x00" not in out
    if text.isascii() and "\x00" not in text:
        assert out == text


def test_storable_writes_out_what_it_replaces() -> None:
    assert storable("a\x00b") == "a\\x00b"
    assert storable("x\ud800y") == "x\\ud800y"
    assert storable("grüße") == "grüße"


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=10,
    )
)
def test_jsonable_results_are_json_postgres_takes(value: object) -> None:
    out = jsonable(value)
    text = json.dumps(out, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert "\\u0000" not in text
    if out != {"unserializable": type(value).__name__}:
        assert out is value
