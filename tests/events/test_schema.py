"""The event schema: round trips, tolerance of newer fields, one typed error for bad input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from surgescale.events import Event, EventDecodeError, EventType, decode, decode_json, encode
from surgescale.events.schema import SCHEMA_VERSION, to_dict

small_int = st.integers(min_value=0, max_value=2**40)
ms = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
text = st.text(min_size=1, max_size=40)

events = st.builds(
    Event,
    type=st.sampled_from(list(EventType)),
    model=text,
    gateway=st.text(max_size=40),
    ts_ms=small_int,
    request_id=st.text(max_size=40),
    prompt_tokens=st.none() | small_int,
    output_tokens=st.none() | small_int,
    pod=st.none() | text,
    status=st.none() | st.integers(min_value=100, max_value=599),
    reason=st.none() | text,
    queue_ms=st.none() | ms,
    ttft_ms=st.none() | ms,
    tpot_ms=st.none() | ms,
    e2e_ms=st.none() | ms,
    queue_depth=st.none() | small_int,
    in_flight=st.none() | small_int,
    seq=st.none() | small_int,
    interval_ms=st.none() | small_int,
)


@given(events)
def test_round_trip(event: Event) -> None:
    assert decode(encode(event)) == event


def test_none_fields_are_left_out() -> None:
    event = Event(type=EventType.ENQUEUE, model="m", gateway="g", ts_ms=1, request_id="r")
    assert set(to_dict(event)) == {"type", "model", "gateway", "ts_ms", "request_id"}


def test_newer_fields_and_versions_are_tolerated() -> None:
    raw = orjson.dumps(
        {
            "v": SCHEMA_VERSION + 1,
            "type": "complete",
            "model": "m",
            "gateway": "g",
            "ts_ms": 5,
            "output_tokens": 7,
            "brand_new_field": {"nested": True},
        }
    )
    event = decode({b"e": raw})
    assert event.type is EventType.COMPLETE
    assert event.output_tokens == 7
    assert event.v == SCHEMA_VERSION + 1


GOOD: dict[str, Any] = {"type": "enqueue", "model": "m", "gateway": "g", "ts_ms": 1}


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        pytest.param({b"x": b"{}"}, "no 'e' field", id="missing-field"),
        pytest.param({b"e": b"{not json"}, "not JSON", id="not-json"),
        pytest.param({b"e": b"[1,2]"}, "Expected `object`", id="not-object"),
        pytest.param({b"e": orjson.dumps({**GOOD, "type": "explode"})}, "$.type", id="bad-type"),
        pytest.param({b"e": orjson.dumps({**GOOD, "type": 3})}, "$.type", id="type-not-str"),
        pytest.param({b"e": orjson.dumps({**GOOD, "model": ""})}, "$.model", id="empty-model"),
        pytest.param({b"e": orjson.dumps({**GOOD, "gateway": 1})}, "$.gateway", id="gw-type"),
        pytest.param({b"e": orjson.dumps({**GOOD, "ts_ms": "1"})}, "$.ts_ms", id="ts-type"),
        pytest.param({b"e": orjson.dumps({**GOOD, "ts_ms": True})}, "$.ts_ms", id="ts-bool"),
        pytest.param(
            {b"e": orjson.dumps({**GOOD, "queue_depth": 1.5})}, "$.queue_depth", id="depth-float"
        ),
        pytest.param({b"e": orjson.dumps({**GOOD, "v": 0})}, "$.v", id="version-zero"),
        pytest.param(
            {b"e": orjson.dumps({**GOOD, "output_tokens": -1})}, "$.output_tokens", id="neg"
        ),
        pytest.param(
            {b"e": orjson.dumps({"model": "m", "gateway": "g", "ts_ms": 1})}, "type", id="no-type"
        ),
    ],
)
def test_malformed_entries_raise_one_typed_error(entry: dict[bytes, bytes], fragment: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode(entry)
    assert fragment in info.value.reason


def test_decode_json_accepts_str() -> None:
    assert decode_json(orjson.dumps(GOOD).decode()).model == "m"
