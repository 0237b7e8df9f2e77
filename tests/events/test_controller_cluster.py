"""The controller's event intake over a Redis Cluster: the real loop, a gateway's producer and the
simulated Kubernetes API, with the events on the session's local cluster instead of one Redis; and
the gateway's own settings and producer given a `redis+cluster://` URL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.reporting import event_producer
from gateway.settings import load_settings
from surgescale.events import Event, EventType, RedisClient, StreamKeys
from surgescale.events.client import is_cluster
from tests.controller.conftest import (
    Gateway,
    Sim,
    eventually,
    gateway_factory,
    sim,
)
from tests.waiting import wait_until

__all__ = ["gateway_factory", "sim"]  # the controller tests' fixtures, used here


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    """Everything that asks for Redis here (controller, gateway, clean-up) gets the cluster."""
    return redis_cluster_url


async def test_a_load_step_on_a_cluster_scales_the_deployment(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        assert ctl.consumer is not None

        async def ready() -> bool:
            consumer = ctl.consumer
            return bool(ctl.health.ready()[0] and ctl.is_leader and consumer and consumer.streams)

        await eventually(ready, what="controller ready, leading and reading the model's stream")
        assert is_cluster(ctl._redis)  # type: ignore[arg-type]
        stats = ctl.consumer.stats
        await wait_until(lambda: stats.acked >= 2, what="2 snapshots handled")
        gw.enqueue(40)  # as in test_integration: 40 queued -> 6 replicas

        async def scaled() -> int:
            n = await sim.replicas("llama")
            return n if n > 1 else 0

        assert await eventually(scaled, timeout=5.0, what="a scale-up PATCH") == 6


async def test_the_gateway_takes_a_cluster_url_and_its_events_land_on_the_cluster(
    redis_cluster_url: str, redis: RedisClient, keys: StreamKeys
) -> None:
    settings = load_settings(
        redis_url=redis_cluster_url, static_pods=[{"model": "m", "url": "http://127.0.0.1:9"}]
    )
    assert settings.redis_url == redis_cluster_url
    async with event_producer(settings.redis_url, prefix=keys.prefix, buffer_limit=100) as producer:
        assert producer is not None
        producer.emit(Event(type=EventType.ENQUEUE, model="m", gateway="gw", ts_ms=1))
        assert await producer.flush()
    assert is_cluster(redis)
    assert await redis.xlen(keys.stream("m")) == 1
