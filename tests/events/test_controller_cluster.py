"""The controller's event intake over a Redis Cluster: the real loop, a gateway's producer and the
simulated Kubernetes API, with the events on the session's local cluster instead of one Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from surgescale.events.client import is_cluster
from tests.controller.conftest import (
    Gateway,
    Sim,
    eventually,
    gateway_factory,
    sim,
)

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
        await asyncio.sleep(3 * gw.interval_s)
        gw.enqueue(40)  # as in test_integration: 40 queued -> 6 replicas

        async def scaled() -> int:
            n = await sim.replicas("llama")
            return n if n > 1 else 0

        assert await eventually(scaled, timeout=5.0, what="a scale-up PATCH") == 6
