"""Re-reading a model's recent events straight from its stream (no consumer group).

A controller that takes a model over from another (`controller.shards`) rebuilds the model's state
from what the gateways wrote in the last window: stream ids are the entries' arrival times in ms,
so `XRANGE <stream> <since_ms> +` in pages gives exactly that, in order. Nothing is acknowledged
or claimed; entries that do not decode are skipped here (the consumer path dead-letters them).
"""

from __future__ import annotations

from typing import Any

from surgescale.events.client import RedisClient
from surgescale.events.keys import StreamKeys
from surgescale.events.schema import Event, decode_entry


async def read_since(
    redis: RedisClient,
    keys: StreamKeys,
    model: str,
    since_ms: int,
    *,
    page: int = 1_000,
    max_entries: int = 200_000,
) -> list[Event]:
    """The events of `model`'s stream written at or after `since_ms` (wall clock, ms), oldest
    first; at most `max_entries` stream entries (the newest are kept when there are more)."""
    stream = keys.stream(model)
    start = f"{max(since_ms, 0)}-0"
    entries: list[Any] = []
    while True:
        reply: Any = await redis.xrange(stream, min=start, max="+", count=page)
        if not reply:
            break
        entries.extend(reply)
        if len(entries) > max_entries:
            entries = entries[-max_entries:]
        if len(reply) < page:
            break
        last = reply[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else str(last))
    out: list[Event] = []
    for _, fields in entries:
        if fields:
            out.extend(decode_entry(fields)[0])
    return out
