"""Shared fixtures: a real Redis (found or started), uuid key prefixes, free ports.

The Redis comes from `surgescale.events.localredis.ensure_redis`: `REDIS_URL`, else
127.0.0.1:6379, else a private redis-server. If none can be had the tests that need it fail with
a message that says what to install; they are never skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from surgescale.events import RedisClient, StreamKeys, close, connect
from surgescale.events.localredis import ensure_redis, free_port


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with ensure_redis() as url:
        yield url


@pytest.fixture
def keys() -> StreamKeys:
    """A key prefix of this test's own, so tests can share one Redis server."""
    return StreamKeys(prefix=f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def redis(redis_url: str, keys: StreamKeys) -> AsyncIterator[RedisClient]:
    client = connect(redis_url)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=f"{keys.prefix}:*"):
            await client.delete(key)
        await close(client)


@pytest.fixture
def port() -> int:
    return free_port()
