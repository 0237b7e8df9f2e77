"""Redis client construction for the event transport, with timeouts suited to a hot path.

One URL picks the kind of Redis: `redis://` / `rediss://` / `unix://` is a single server;
`redis+cluster://host:port` / `rediss+cluster://host:port` is a Redis Cluster reached through
one seed node (redis-py's `RedisCluster`, which learns the slot map, follows MOVED/ASK
redirections and refreshes the map after a reshard or a failover).

For a single Redis, redis-py's own retries are turned off: the producer and the consumer each
retry with the project's backoff (`surgescale.retry`), so one failing Redis costs a bounded, known
delay. A cluster client keeps a few quick retries of its own, because a retry there also refreshes
the slot map (a failover or a finished migration is then followed at once).
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from surgescale.events.rawwrite import close_pipes

RedisClient: TypeAlias = Redis | RedisCluster
"""The client type, re-exported so other packages can annotate without importing redis."""

TRANSPORT_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
"""What a failing Redis raises: a Redis error, a cluster client's own error (no node serves a
slot, the cluster is unreachable: not a `RedisError` in redis-py), or a socket error."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that mean a Redis Cluster, and the plain scheme each stands for."""


def is_cluster_url(url: str) -> bool:
    """True if `url` names a Redis Cluster (`redis+cluster://` or `rediss+cluster://`)."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def plain_url(url: str) -> str:
    """`url` with a cluster scheme turned into the plain one (for tools that want one node)."""
    scheme, sep, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES.get(scheme.lower(), scheme)}{sep}{rest}"


def is_cluster(client: RedisClient) -> bool:
    """True if `client` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def connect(url: str, *, timeout: float = 2.0, connect_timeout: float = 1.0) -> RedisClient:
    """A client for `url` that fails fast instead of hanging when Redis is away."""
    if is_cluster_url(url):
        return RedisCluster.from_url(
            plain_url(url),
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            health_check_interval=0,
            decode_responses=False,
            max_connections=1_000,
            topology_refresh_min_interval=0.2,
        )
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=False,
    )


async def close(client: RedisClient) -> None:
    """Close a client made by `connect` (and the lean connections made for it: `rawwrite`)."""
    close_pipes(client)
    await client.aclose()
