"""The versioned event schema: what the gateway says about each request, and how it is encoded.

Every request milestone is one `Event`. Timestamps are wall-clock milliseconds (`ts_ms`) for
ordering and display; durations (`queue_ms`, `ttft_ms`, `tpot_ms`, `e2e_ms`) are measured on the
gateway's own monotonic clock, so the controller can use them without caring about clock skew
between hosts. A `snapshot` carries a gateway's absolute queue depth and in-flight count for one
model, which lets the controller heal from missing events.

Encoding: one stream-entry field, `e`, holding the event as an orjson object with `None` fields
left out. Decoding tolerates unknown fields (a newer producer may add some) and raises one typed
error, `EventDecodeError`, for anything malformed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

import orjson

SCHEMA_VERSION: Final = 1
"""Version written by this producer. Readers accept any version >= 1 and ignore unknown fields."""

FIELD: Final = b"e"
"""The stream-entry field that holds an encoded event."""


class EventType(enum.StrEnum):
    """The request milestones (and the periodic snapshot) a gateway reports."""

    ENQUEUE = "enqueue"
    """A request was admitted into a model's queue."""
    DISPATCH = "dispatch"
    """A queued request was sent to a pod (`queue_ms` = time spent queued)."""
    FIRST_TOKEN = "first_token"
    """The first output token reached the gateway (`ttft_ms` from arrival)."""
    COMPLETE = "complete"
    """A request finished; `status`, `output_tokens`, `ttft_ms`, `tpot_ms`, `e2e_ms`."""
    REJECT = "reject"
    """A request was refused (queue full, waited too long, ...); `status`, `reason`."""
    CANCEL = "cancel"
    """The client went away before the end; `reason`."""
    SNAPSHOT = "snapshot"
    """A gateway's absolute `queue_depth` and `in_flight` for one model."""


class EventDecodeError(ValueError):
    """A stream entry is not a valid event; `reason` says what is wrong with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One gateway event. Optional fields are `None` when they do not apply to the type."""

    type: EventType
    model: str
    gateway: str
    """Instance id of the gateway that emitted it."""
    ts_ms: int
    """Wall-clock time of the milestone, milliseconds since the epoch."""
    request_id: str = ""
    v: int = SCHEMA_VERSION
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    pod: str | None = None
    status: int | None = None
    """HTTP status the client got (complete, reject)."""
    reason: str | None = None
    queue_ms: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    queue_depth: int | None = None
    in_flight: int | None = None
    seq: int | None = None
    """Per-gateway sequence number of snapshots, to spot gaps and restarts."""
    interval_ms: int | None = None
    """The snapshot period of the gateway that sent this snapshot."""
    api_key: str | None = None
    """An opaque tenant label (never the key itself), for fairness accounting."""


_INT: Final = (int,)
_NUM: Final = (int, float)
_STR: Final = (str,)
_OPTIONAL: Final[dict[str, tuple[type, ...]]] = {
    "request_id": _STR,
    "v": _INT,
    "prompt_tokens": _INT,
    "output_tokens": _INT,
    "pod": _STR,
    "status": _INT,
    "reason": _STR,
    "queue_ms": _NUM,
    "ttft_ms": _NUM,
    "tpot_ms": _NUM,
    "e2e_ms": _NUM,
    "queue_depth": _INT,
    "in_flight": _INT,
    "seq": _INT,
    "interval_ms": _INT,
    "api_key": _STR,
}
_FIELD_NAMES: Final = tuple(f.name for f in fields(Event))
_TYPES: Final = {t.value: t for t in EventType}


def to_dict(event: Event) -> dict[str, Any]:
    """The event as a plain dict, without the fields that are None."""
    out: dict[str, Any] = {}
    for name in _FIELD_NAMES:
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    return out


def encode_json(event: Event) -> bytes:
    """The event as compact JSON bytes."""
    return orjson.dumps(to_dict(event))


def encode(event: Event) -> dict[bytes, bytes]:
    """The event as stream-entry fields for XADD."""
    return {FIELD: encode_json(event)}


def from_dict(data: Mapping[str, Any]) -> Event:
    """Validate a decoded JSON object and build the event; unknown keys are ignored."""
    try:
        kind = _TYPES[data["type"]]
    except KeyError as exc:
        raise EventDecodeError(f"missing or unknown event type: {data.get('type')!r}") from exc
    except TypeError as exc:
        raise EventDecodeError(f"event type is not a string: {data.get('type')!r}") from exc
    model = data.get("model")
    gateway = data.get("gateway")
    ts_ms = data.get("ts_ms")
    if not isinstance(model, str) or not model:
        raise EventDecodeError(f"field 'model' must be a non-empty string, got {model!r}")
    if not isinstance(gateway, str):
        raise EventDecodeError(f"field 'gateway' must be a string, got {gateway!r}")
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
        raise EventDecodeError(f"field 'ts_ms' must be an integer, got {ts_ms!r}")
    kwargs: dict[str, Any] = {}
    for name, allowed in _OPTIONAL.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, allowed) or isinstance(value, bool):
            raise EventDecodeError(f"field {name!r} has the wrong type: {value!r}")
        kwargs[name] = value
    if kwargs.get("v", SCHEMA_VERSION) < 1:
        raise EventDecodeError(f"unsupported event version {kwargs['v']!r}")
    return Event(type=kind, model=model, gateway=gateway, ts_ms=ts_ms, **kwargs)


def decode_json(raw: bytes | str) -> Event:
    """Decode JSON bytes made by `encode_json` (or a newer producer)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EventDecodeError(f"not a JSON object: {type(data).__name__}")
    return from_dict(data)


def decode(entry: Mapping[bytes, bytes] | Mapping[str, str]) -> Event:
    """Decode the fields of one stream entry."""
    raw = entry.get(FIELD)  # type: ignore[call-overload]
    if raw is None:
        raw = entry.get("e")  # type: ignore[call-overload]
    if raw is None:
        raise EventDecodeError("stream entry has no 'e' field")
    return decode_json(raw)
