"""What every fault gets from the command line: mode, working directory, its own stream reader.

`FaultContext.scaled(quick, full)` picks a duration by mode. `stream_events` reads a model's event
stream straight from Redis (through the event transport's client and codec), for figures that
look at what the gateway wrote rather than at what the controller did with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgescale.events import Event, StreamKeys, close, connect
from surgescale.events.schema import decode_entry


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultContext:
    quick: bool
    work: Path
    seed: int = 0

    def scaled(self, quick: float, full: float) -> float:
        return quick if self.quick else full


async def stream_entries(
    redis_url: str, prefix: str, model: str
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of a model's stream (id, fields), oldest first."""
    client = connect(redis_url, timeout=5.0)
    try:
        raw: Any = await client.xrange(StreamKeys(prefix).stream(model), "-", "+")
        return [(bytes(entry_id), dict(fields)) for entry_id, fields in raw or []]
    finally:
        await close(client)


async def stream_events(redis_url: str, prefix: str, model: str) -> list[Event]:
    out: list[Event] = []
    for _, fields in await stream_entries(redis_url, prefix, model):
        good, _bad = decode_entry(fields)
        out.extend(good)
    return out


def duplicate_count(events: list[Event]) -> int:
    """Events that repeat an earlier one (same gateway, type, request, time and sequence)."""
    seen: set[tuple[object, ...]] = set()
    dups = 0
    for e in events:
        key = (e.gateway, e.type, e.request_id, e.ts_ms, e.seq, e.status)
        if key in seen:
            dups += 1
        seen.add(key)
    return dups
