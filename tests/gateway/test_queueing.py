"""Admission over real HTTP: 429 on a full queue, 503 after the wait, hold at zero pods then
release, cancel on disconnect (queued and streaming), and the snapshots that report it all."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest
from aiohttp import web

from surgescale.events import EventType, RedisClient, StreamKeys
from tests.gateway.conftest import MODEL, Harness, events_of, read_events, wait_for

pytestmark = pytest.mark.timeout(60)


async def test_full_queue_gets_429_with_retry_after(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(
        static_pods=[f"{MODEL}={pod.url}"], pod_concurrency=1, max_queue_length=1, retry_after_s=3
    )
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    client = gw.client()
    long = {"model": MODEL, "prompt": "x", "max_tokens": 400}
    running = asyncio.create_task(client.completions.create(**long))  # type: ignore[call-overload]
    await wait_for(lambda: queue.in_flight == 1, what="first request in flight")
    waiting = asyncio.create_task(client.completions.create(**long))  # type: ignore[call-overload]
    await wait_for(lambda: queue.queued == 1, what="second request queued")
    with pytest.raises(openai.RateLimitError) as info:
        await client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert info.value.response.headers["Retry-After"] == "3"
    assert info.value.code == "queue_full"
    for task in (running, waiting):
        task.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)
    events = await events_of(redis, keys, {"reject"})
    reject = next(e for e in events if e.type is EventType.REJECT)
    assert (reject.status, reject.reason, reject.queue_ms) == (429, "queue_full", None)


async def test_hold_at_zero_pods_then_release(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    pod = await harness.pod(load_seconds=1.0)  # cold start: /health says no for a second
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"])
    queue = gw.state.scheduler.queues[MODEL]
    assert queue.ready_pods == 0
    task = asyncio.create_task(
        gw.client().completions.create(model=MODEL, prompt="wake up", max_tokens=3)
    )
    # The controller hears about the held request at once, while no pod is ready.
    events = await events_of(redis, keys, {"enqueue"}, timeout=0.9)
    assert not pod.ready
    assert not task.done()
    snaps = [e for e in events if e.type is EventType.SNAPSHOT]
    await wait_for(lambda: queue.queued == 1, what="the request to be queued")
    reply = await task
    assert reply.choices[0].text
    events = await events_of(redis, keys, {"dispatch"})  # within the linger
    dispatch = next(e for e in events if e.type is EventType.DISPATCH)
    assert dispatch.queue_ms is not None
    assert dispatch.queue_ms > 500  # it waited for the cold start
    held = [
        e for e in await read_events(redis, keys) if e.type is EventType.SNAPSHOT and e.queue_depth
    ]
    assert held, f"no snapshot showed the held request (saw {len(snaps)} early snapshots)"
    assert all(e.interval_ms == 100 for e in held)


async def test_waiting_too_long_gets_503(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    gw = await harness.gateway(
        static_pods=[f"{MODEL}=http://127.0.0.1:9"],
        max_queue_wait_s=0.3,  # never ready
    )
    with pytest.raises(openai.InternalServerError) as info:
        await gw.client().completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert info.value.status_code == 503
    assert info.value.response.headers["Retry-After"] == "1"
    events = await events_of(redis, keys, {"enqueue", "reject"})
    reject = next(e for e in events if e.type is EventType.REJECT)
    assert reject.reason == "queue_timeout"
    assert reject.queue_ms is not None
    assert reject.queue_ms >= 290
    assert gw.state.scheduler.queues[MODEL].queued == 0


async def test_cancel_while_queued(harness: Harness, redis: RedisClient, keys: StreamKeys) -> None:
    gw = await harness.gateway(static_pods=[f"{MODEL}=http://127.0.0.1:9"])  # never ready
    queue = gw.state.scheduler.queues[MODEL]
    body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http:
        with pytest.raises(TimeoutError):
            await http.post(gw.url + "/v1/completions", json=body)
    await wait_for(lambda: queue.queued == 0, what="the queued request to leave")
    events = await events_of(redis, keys, {"cancel"})
    cancel = next(e for e in events if e.type is EventType.CANCEL)
    assert cancel.pod is None
    assert cancel.reason == "client_disconnect"


async def test_cancel_streaming_request_frees_slot_and_aborts_upstream(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"], pod_concurrency=1)
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    stream = await gw.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "go"}], max_tokens=5000, stream=True
    )
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 5:
            break
    await stream.close()
    await wait_for(lambda: queue.in_flight == 0, what="the slot to be freed")
    await wait_for(lambda: pod.engine.running == 0, what="the pod to abort the request")
    events = await events_of(redis, keys, {"cancel"})
    cancel = next(e for e in events if e.type is EventType.CANCEL)
    assert cancel.pod == pod.url
    assert not [e for e in events if e.type is EventType.COMPLETE]
    # The freed slot serves the next request.
    reply = await gw.client().completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert reply.choices[0].text


async def test_snapshots_carry_absolute_counts_and_sequence(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    gw = await harness.gateway(static_pods=[f"{MODEL}=http://127.0.0.1:9"], snapshot_interval_ms=50)
    client = gw.client()
    held = [
        asyncio.create_task(client.completions.create(model=MODEL, prompt="x", max_tokens=1))
        for _ in range(3)
    ]

    async def three_held() -> bool:
        events = await read_events(redis, keys)
        return any(e.type is EventType.SNAPSHOT and e.queue_depth == 3 for e in events)

    await wait_for(three_held, what="a snapshot with queue_depth=3")
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    snaps = [e for e in await read_events(redis, keys) if e.type is EventType.SNAPSHOT]
    seqs = [e.seq or 0 for e in snaps]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert all(e.gateway == "gw-test" and e.interval_ms == 50 for e in snaps)
    assert all(e.in_flight == 0 for e in snaps)


async def test_per_key_concurrency_lets_another_key_pass(harness: Harness) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(
        static_pods=[f"{MODEL}={pod.url}"], api_keys=["key-a", "key-b"], per_key_concurrency=1
    )
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    heavy = gw.client(api_key="key-a")
    long = [
        asyncio.create_task(heavy.completions.create(model=MODEL, prompt="x", max_tokens=3000))
        for _ in range(3)
    ]
    await wait_for(lambda: (queue.queued, queue.in_flight) == (2, 1), what="key-a limited to one")
    reply = await gw.client(api_key="key-b").completions.create(
        model=MODEL, prompt="x", max_tokens=2
    )
    assert reply.choices[0].text
    assert queue.queued == 2  # key-a's others still wait: key-b went past them
    for task in long:
        task.cancel()
    await asyncio.gather(*long, return_exceptions=True)
    await wait_for(lambda: (queue.queued, queue.in_flight) == (0, 0), what="all slots free")


async def test_fair_share_of_a_full_queue(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    gw = await harness.gateway(
        static_pods=[f"{MODEL}=http://127.0.0.1:9"],  # never ready: everything queues
        api_keys=["key-a", "key-b"],
        fairness=True,
        max_queue_length=2,
    )
    queue = gw.state.scheduler.queues[MODEL]
    hog = gw.client(api_key="key-a")
    first = asyncio.create_task(hog.completions.create(model=MODEL, prompt="1", max_tokens=1))
    await wait_for(lambda: queue.queued == 1, what="key-a's first request queued")
    second = asyncio.create_task(hog.completions.create(model=MODEL, prompt="2", max_tokens=1))
    await wait_for(lambda: queue.queued == 2, what="key-a filling the queue")
    late = asyncio.create_task(
        gw.client(api_key="key-b").completions.create(model=MODEL, prompt="x", max_tokens=1)
    )
    with pytest.raises(openai.RateLimitError) as info:
        await second  # key-a's newest gives its place to key-b
    assert info.value.code == "fair_share"
    assert queue.queued == 2
    assert not first.done()
    assert not late.done()
    for task in (first, late):
        task.cancel()
    await asyncio.gather(first, late, return_exceptions=True)
    events = await events_of(redis, keys, {"reject"})
    reject = next(e for e in events if e.type is EventType.REJECT)
    assert reject.reason == "fair_share"
    assert reject.queue_ms is not None  # it had been queued: the controller subtracts it


async def test_a_client_that_hangs_up_right_after_done_is_booked_complete(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    # An upstream that lingers after `[DONE]` before closing its stream, as a busy pod can: the
    # client has its whole answer and hangs up while the gateway still waits for the upstream end.
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def lingering(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"text":"hi"}]}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        await asyncio.sleep(1.0)
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", lingering)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        gw = await harness.gateway(static_pods=[f"{MODEL}=http://{host}:{port}"])
        queue = gw.state.scheduler.queues[MODEL]
        await wait_for(lambda: queue.ready_pods == 1, what="upstream ready")
        body = {"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": True}
        async with aiohttp.ClientSession() as http:
            response = await http.post(gw.url + "/v1/completions", json=body)
            async for line in response.content:
                if line.startswith(b"data: [DONE]"):
                    break
            response.close()
        await wait_for(lambda: queue.in_flight == 0, what="the slot to be freed")
        events = await events_of(redis, keys, {"enqueue"})

        async def booked() -> bool:
            nonlocal events
            events = await read_events(redis, keys)
            return any(e.type in (EventType.COMPLETE, EventType.CANCEL) for e in events)

        await wait_for(booked, what="a terminal event")
        kinds = [e.type for e in events if e.type in (EventType.COMPLETE, EventType.CANCEL)]
        assert kinds == [EventType.COMPLETE]
    finally:
        await runner.cleanup()
