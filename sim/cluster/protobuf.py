"""Just enough of the Kubernetes protobuf wire format to accept `kubectl create namespace`.

kubectl sends built-in objects it generates itself (`kubectl create namespace|configmap`) as
`application/vnd.kubernetes.protobuf`: the magic `k8s\\0`, then a `runtime.Unknown` holding the
TypeMeta and the raw object message. We decode the TypeMeta and the object's ObjectMeta (name,
generateName, namespace, labels, annotations) and, for ConfigMaps, `data`; anything else in a
protobuf body is refused with 415 so the client can resend it as JSON. The varint codec here is
the simulator's only one (`sim.cluster.openapi` encodes its protobuf document with it).
"""

from __future__ import annotations

from typing import Any

from .errors import bad_request, unsupported_media

MAGIC = b"k8s\x00"


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The base-128 varint at `buf[pos:]` and the position after it (ValueError if truncated)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def encode_varint(n: int) -> bytes:
    """`n` (not negative) as a base-128 varint, least significant group first."""
    if n < 0:
        raise ValueError(f"varint of a negative number: {n}")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field `number` of wire type 2 (bytes, string or an embedded message) holding `payload`."""
    return encode_varint((number << 3) | 2) + encode_varint(len(payload)) + payload


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message; length-delimited values as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = decode_varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = decode_varint(buf, pos)
            out.append((number, buf[pos : pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _str(value: int | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _map_entry(value: int | bytes) -> tuple[str, str]:
    assert isinstance(value, bytes)
    entry = dict(fields(value))
    return _str(entry.get(1, b"")), _str(entry.get(2, b""))


def _object_meta(buf: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace"}
    for number, value in fields(buf):
        if number in names:
            meta[names[number]] = _str(value)
        elif number in (11, 12):
            k, v = _map_entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[k] = v
    return meta


def decode_object(body: bytes) -> dict[str, Any]:
    if not body.startswith(MAGIC):
        raise bad_request("protobuf body without the k8s envelope")
    try:
        unknown = dict(fields(body[len(MAGIC) :]))
        type_meta = dict(fields(bytes(unknown.get(1, b""))))
        api_version, kind = _str(type_meta.get(1, b"")), _str(type_meta.get(2, b""))
        raw = unknown.get(2, b"")
        assert isinstance(raw, bytes)
        obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
        for number, value in fields(raw):
            if number == 1 and isinstance(value, bytes):
                obj["metadata"] = _object_meta(value)
            elif kind == "ConfigMap" and number == 2:
                k, v = _map_entry(value)
                obj.setdefault("data", {})[k] = v
            elif kind not in ("Namespace", "ConfigMap"):
                raise unsupported_media(
                    f"protobuf bodies of kind {kind} are not supported; send application/json"
                )
    except (ValueError, AssertionError, UnicodeDecodeError) as exc:
        raise bad_request(f"invalid protobuf body: {exc}") from exc
    return obj
