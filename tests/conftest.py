"""Shared fixtures: a real Redis (found or started), a local Redis Cluster, uuid key prefixes,
free ports.

The Redis comes from `sim.localredis.server.ensure_redis`: `REDIS_URL`, else
127.0.0.1:6379, else a private redis-server. The Redis Cluster is `REDIS_CLUSTER_URL` if set, else
a private cluster of redis-server processes on loopback (3 masters with a replica each), started
once per session
(`sim.localredis.cluster`). If either cannot be had the tests that need it fail with a
message that says what to install; they are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from sim.localredis.cluster import LocalCluster, start_local_cluster
from sim.localredis.server import RedisUnavailableError, ensure_redis, free_port
from surgescale.events import RedisClient, StreamKeys, close, connect


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with ensure_redis() as url:
        yield url


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """A private Redis Cluster on loopback (3 masters, one replica each), shared by the session."""
    try:
        cluster = start_local_cluster(3, replicas=1, node_timeout_ms=1_000)
    except RedisUnavailableError as exc:
        pytest.fail(f"could not start a local Redis Cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(request: pytest.FixtureRequest) -> str:
    """`REDIS_CLUSTER_URL` (a `redis+cluster://` URL) if set, else the session's local cluster."""
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        return url
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    return cluster.url


@pytest.fixture
def keys() -> StreamKeys:
    """A key prefix of this test's own, so tests can share one Redis server."""
    return StreamKeys(prefix=f"test-{uuid.uuid4().hex[:12]}")


@contextlib.asynccontextmanager
async def client_for(url: str, keys: StreamKeys) -> AsyncIterator[RedisClient]:
    """A client of `url` whose keys under `keys.prefix` are deleted afterwards."""
    client = connect(url)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=f"{keys.prefix}:*"):
            await client.delete(key)
        await close(client)


@pytest.fixture
async def redis(redis_url: str, keys: StreamKeys) -> AsyncIterator[RedisClient]:
    async with client_for(redis_url, keys) as client:
        yield client


@pytest.fixture
def port() -> int:
    return free_port()
