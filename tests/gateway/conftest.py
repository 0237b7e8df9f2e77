"""Fixtures for gateway tests: real simulated pods, an in-process gateway, its events in Redis.

Pods are `sim.pod.runtime.start_pod` on loopback; the gateway is `build_app` behind a real
AppRunner on a free port; events go to the shared test Redis under the test's own key prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI

from gateway.app import build_app
from gateway.settings import GatewaySettings
from gateway.state import STATE, GatewayState
from sim.pod.runtime import PodOptions, RunningPod, start_pod
from surgescale.events import Event, EventType, RedisClient, StreamKeys
from surgescale.events.schema import decode_entry

MODEL = "llama3-8b"


@dataclass
class RunningGateway:
    url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def state(self) -> GatewayState:
        return self.app[STATE]

    def client(self, **kw: Any) -> AsyncOpenAI:
        kw.setdefault("api_key", "test")
        return AsyncOpenAI(base_url=self.url + "/v1", max_retries=0, timeout=30.0, **kw)

    async def stop(self) -> None:
        await self.runner.cleanup()


@dataclass
class Harness:
    keys: StreamKeys
    redis_url: str
    pods: list[RunningPod] = field(default_factory=list)
    gateways: list[RunningGateway] = field(default_factory=list)

    async def pod(self, *, model: str = MODEL, **options: Any) -> RunningPod:
        pod = await start_pod(PodOptions(model=model, **options))
        self.pods.append(pod)
        return pod

    def settings(self, **overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "port": 0,
            "redis_url": self.redis_url,
            "events_prefix": self.keys.prefix,
            "health_interval_s": 0.05,
            "gateway_id": "gw-test",
            "allow_unauthenticated": True,  # tests that need keys pass api_keys
        }
        values.update(overrides)
        return GatewaySettings(**values)

    async def gateway(
        self, settings: GatewaySettings | None = None, **overrides: Any
    ) -> RunningGateway:
        settings = settings or self.settings(**overrides)
        app = build_app(settings)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        gw = RunningGateway(url=f"http://{host}:{port}", app=app, runner=runner)
        self.gateways.append(gw)
        return gw

    async def close(self) -> None:
        for gw in self.gateways:
            with contextlib.suppress(Exception):
                await gw.stop()
        for pod in self.pods:
            with contextlib.suppress(Exception):
                await pod.stop()


@pytest.fixture
async def harness(redis_url: str, keys: StreamKeys, redis: RedisClient) -> AsyncIterator[Harness]:
    """Pods and gateways of one test, stopped before `redis` deletes the test's keys."""
    h = Harness(keys=keys, redis_url=redis_url)
    try:
        yield h
    finally:
        await h.close()


async def read_events(redis: RedisClient, keys: StreamKeys, model: str = MODEL) -> list[Event]:
    out: list[Event] = []
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(keys.stream(model))  # type: ignore[assignment]
    for _, fields in entries:
        good, bad = decode_entry(fields)
        assert not bad, bad
        out.extend(good)
    return out


async def events_once_complete(
    redis: RedisClient, keys: StreamKeys, n: int, model: str = MODEL
) -> list[Event]:
    """The model's events once `n` `complete` events are among them (the last requests' events
    come within the gateway's event linger, after their responses)."""
    events: list[Event] = []

    async def enough() -> bool:
        nonlocal events
        events = await read_events(redis, keys, model)
        return sum(e.type is EventType.COMPLETE for e in events) >= n

    await wait_for(enough, what=f"{n} complete events")
    return events


async def wait_for(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 10.0,
    what: str = "condition",
) -> None:
    """Poll `check` until it holds; fail saying `what` did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def events_of(
    redis: RedisClient,
    keys: StreamKeys,
    request_types: set[str],
    *,
    model: str = MODEL,
    timeout: float = 10.0,
) -> list[Event]:
    """Wait until the request events of every kind in `request_types` have arrived; return all."""
    found: list[Event] = []

    async def check() -> bool:
        nonlocal found
        found = await read_events(redis, keys, model)
        kinds = {e.type.value for e in found}
        return request_types <= kinds

    await wait_for(check, timeout=timeout, what=f"events {sorted(request_types)}")
    return found
