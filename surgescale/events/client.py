"""Redis client construction for the event transport, with timeouts suited to a hot path.

redis-py's own retries are turned off: the producer and the consumer each retry with the
project's backoff (`surgescale.retry`), so one failing Redis costs a bounded, known delay.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

RedisClient = Redis
"""The client type, re-exported so other packages can annotate without importing redis."""


def connect(url: str, *, timeout: float = 2.0, connect_timeout: float = 1.0) -> Redis:
    """A client for `url` that fails fast instead of hanging when Redis is away."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=False,
    )


async def close(client: Redis) -> None:
    """Close a client made by `connect`."""
    await client.aclose()
