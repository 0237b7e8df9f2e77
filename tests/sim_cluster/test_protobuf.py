"""The simulated API server's one varint codec (sim.cluster.protobuf): what it encodes decodes
back, the known encodings of the protobuf spec hold, and the OpenAPI v2 document it serves as
protobuf reads back through the same decoder kubectl's bodies go through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.cluster.openapi import v2_protobuf
from sim.cluster.protobuf import decode_varint, encode_varint, fields


@given(st.integers(min_value=0, max_value=2**64 - 1), st.binary(max_size=4))
def test_varints_round_trip(n: int, tail: bytes) -> None:
    encoded = encode_varint(n)
    assert decode_varint(encoded + tail, 0) == (n, len(encoded))


def test_known_encodings_and_bad_input() -> None:
    assert encode_varint(1) == b"\x01"
    assert encode_varint(150) == b"\x96\x01"  # the protobuf encoding guide's example
    assert encode_varint(300) == b"\xac\x02"
    with pytest.raises(ValueError, match="truncated"):
        decode_varint(b"\x96", 0)
    with pytest.raises(ValueError, match="negative"):
        encode_varint(-1)


def test_the_openapi_document_decodes() -> None:
    top = dict(fields(v2_protobuf()))
    assert top[1] == b"2.0"
    info = top[2]
    assert isinstance(info, bytes)
    assert dict(fields(info)) == {1: b"Kubernetes", 2: b"v1.32.0"}
