"""Failures: a pod that errors or is gone (retry on another), a stream that breaks mid-way
(SSE error event), and Redis going away while the gateway serves (it keeps serving, counts)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from sim.localredis.server import start_private_redis
from sim.pod.faults import Faults
from surgescale.events import EventType, RedisClient, StreamKeys
from tests.gateway.conftest import (
    MODEL,
    Harness,
    RunningGateway,
    events_of,
    events_once_complete,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


def _retries(gw: RunningGateway) -> float:
    value = gw.state.metrics.registry.get_sample_value(
        "surgescale_gateway_upstream_retries_total", {"model": MODEL}
    )
    return value or 0.0


async def test_retry_on_a_pod_that_answers_5xx(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    bad = await harness.pod(faults=Faults(error_rate=1.0))
    good = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={bad.url}", f"{MODEL}={good.url}"])
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 2, what="both pods ready")
    client = gw.client()
    for stream in (False, True, False, True):
        if stream:
            chunks = await client.completions.create(
                model=MODEL, prompt="x", max_tokens=3, stream=True
            )
            assert len([c async for c in chunks if c.choices]) == 3
        else:
            reply = await client.completions.create(model=MODEL, prompt="x", max_tokens=3)
            assert reply.choices[0].text
    retries = _retries(gw)
    assert retries >= 1  # least-outstanding alternates, so the failing pod was tried
    events = await events_once_complete(redis, keys, 4)
    completes = [e for e in events if e.type is EventType.COMPLETE]
    dispatches = [e for e in events if e.type is EventType.DISPATCH]
    assert len(completes) == 4
    assert all(e.status == 200 and e.pod == good.url for e in completes)
    assert len(dispatches) == 4  # a retry is not a second dispatch


async def test_retry_when_the_pod_is_gone(harness: Harness) -> None:
    good = await harness.pod()
    gone = await harness.pod()
    gw = await harness.gateway(
        static_pods=[f"{MODEL}={gone.url}", f"{MODEL}={good.url}"], health_interval_s=30.0
    )
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 2, what="both pods ready")
    await gone.stop()  # the slow health probe still believes in it: connection refused
    client = gw.client()
    for _ in range(3):
        reply = await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        assert reply.choices[0].text
    assert _retries(gw) >= 1


async def test_only_failing_pod_gives_an_error_after_the_retry(harness: Harness) -> None:
    bad = await harness.pod(faults=Faults(error_rate=1.0))
    gw = await harness.gateway(static_pods=[f"{MODEL}={bad.url}"])
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    with pytest.raises(openai.InternalServerError) as info:
        await gw.client().completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert info.value.status_code == 500
    assert _retries(gw) == 1
    assert (queue.queued, queue.in_flight) == (0, 0)


async def _break_mid_stream(
    harness: Harness, redis: RedisClient, keys: StreamKeys, fault: str, **settings: Any
) -> bytes:
    """Stream a long answer, give the pod `fault` after three chunks, and return what the
    client received; checks what every break after the first byte must end with: the
    complete event says 502 `upstream_error_mid_stream` and nothing stays queued or in flight."""
    pod = await harness.pod()
    gw = await harness.gateway(
        static_pods=[f"{MODEL}={pod.url}"], health_interval_s=30.0, **settings
    )
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    body = {"model": MODEL, "prompt": "x", "max_tokens": 3000, "stream": True}
    received = b""
    faulted: asyncio.Task[object] | None = None
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(gw.url + "/v1/completions", json=body) as resp,
        ):
            assert resp.status == 200
            async for data in resp.content.iter_any():
                received += data
                if received.count(b"data:") >= 3 and faulted is None:
                    faulted = asyncio.create_task(pod.set_faults(**{fault: True}))
        assert faulted is not None
        await faulted
        events = await events_of(redis, keys, {"complete"})
        complete = next(e for e in events if e.type is EventType.COMPLETE)
        assert (complete.status, complete.reason) == (502, "upstream_error_mid_stream")
        assert (queue.queued, queue.in_flight) == (0, 0)
    finally:
        await pod.set_faults(**{fault: False})
    return received


async def test_break_after_first_byte_ends_stream_with_sse_error(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    received = await _break_mid_stream(harness, redis, keys, "crash")
    last = [e for e in received.split(b"\n\n") if e][-1]
    assert last.startswith(b'data: {"error"')
    assert b"upstream_error" in last


async def test_a_pod_silent_mid_stream_ends_it_after_the_idle_timeout(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    """`idle_timeout_s` still bounds the silence between two chunks once the relay has taken
    it over from aiohttp's per-read timer (`gateway.streaming._IdleWatch`)."""
    received = await _break_mid_stream(harness, redis, keys, "hang", idle_timeout_s=0.5)
    last = [e for e in received.split(b"\n\n") if e][-1]
    assert last.startswith(b'data: {"error"')
    assert b"SocketTimeoutError" in last


async def test_redis_down_while_serving(harness: Harness) -> None:
    server = start_private_redis()
    try:
        pod = await harness.pod()
        gw = await harness.gateway(
            static_pods=[f"{MODEL}={pod.url}"],
            redis_url=server.url,
            event_buffer_limit=100,
            snapshot_interval_ms=10,
        )
        queue = gw.state.scheduler.queues[MODEL]
        await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
        client = gw.client()
        reporter = gw.state.reporter
        assert reporter is not None
        assert reporter.producer is not None
        producer = reporter.producer
        await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        await wait_for(lambda: producer.stats.flushed > 0, what="events to reach Redis")
        server.stop()
        for stream in (False, True, False, True, False):
            if stream:
                chunks = await client.completions.create(
                    model=MODEL, prompt="x", max_tokens=4, stream=True
                )
                assert len([c async for c in chunks if c.choices]) == 4
            else:
                reply = await client.completions.create(model=MODEL, prompt="x", max_tokens=4)
                assert reply.choices[0].text
        await wait_for(lambda: producer.stats.dropped > 0, what="drops to be counted")
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as resp:
            text = await resp.text()
        dropped = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("surgescale_gateway_events_dropped_total")
        ]
        assert dropped
        assert dropped[0] > 0
        assert "surgescale_gateway_events_connected 0.0" in text
        # Redis comes back: events flow again.
        server.start()
        flushed = producer.stats.flushed
        await wait_for(
            lambda: producer.stats.flushed > flushed + 10, timeout=15, what="events to flow again"
        )
    finally:
        server.stop()


async def test_hung_pod_times_out_with_504(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(
        static_pods=[f"{MODEL}={pod.url}"], first_byte_timeout_s=0.5, health_interval_s=30.0
    )
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    await pod.set_faults(hang=True)
    with pytest.raises(openai.APIStatusError) as info:
        await gw.client().completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert info.value.status_code == 504
    events = await events_of(redis, keys, {"complete"})
    complete = next(e for e in events if e.type is EventType.COMPLETE)
    assert (complete.status, complete.reason) == (504, "upstream_timeout")
    assert (queue.queued, queue.in_flight) == (0, 0)
    await pod.set_faults(hang=False)


async def test_redis_absent_from_the_start(harness: Harness) -> None:
    from sim.localredis.server import free_port

    pod = await harness.pod()
    gw = await harness.gateway(
        static_pods=[f"{MODEL}={pod.url}"], redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    reply = await gw.client().completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert reply.choices[0].text
    reporter = gw.state.reporter
    assert reporter is not None
    assert reporter.producer is not None
    producer = reporter.producer
    await wait_for(lambda: not producer.connected, what="the producer to notice Redis is away")
    assert producer.stats.flushed == 0
    assert producer.stats.buffered > 0
