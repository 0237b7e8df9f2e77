"""SLO-first serving over real HTTP: request deadlines, the dispatch order when a pod turns Ready,
SSE keep-alives for queued streams (and the openai client ignoring them), the cap in snapshots."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from surgescale.events import Event, EventType, RedisClient, StreamKeys
from tests.gateway.conftest import MODEL, Harness, events_of, read_events, wait_for

pytestmark = pytest.mark.timeout(60)


async def _stream_text(gw_client: openai.AsyncOpenAI, prompt: str) -> str:
    stream = await gw_client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=3, stream=True
    )
    parts = [c.choices[0].text async for c in stream if c.choices]
    return "".join(parts)


@pytest.mark.parametrize(
    ("dispatch", "fresh_first"),
    [pytest.param("deadline", True, id="deadline"), pytest.param("fifo", False, id="fifo")],
)
async def test_a_freshly_ready_pod_serves_fresh_requests_first(
    harness: Harness, redis: RedisClient, keys: StreamKeys, dispatch: str, fresh_first: bool
) -> None:
    """A backlog builds at zero pods; its requests miss their 1.5 s deadline while the pod loads
    (2.5 s). Requests sent just before it turns Ready can still make theirs: under `deadline`
    they get the pod first; under `fifo` (the old order) they wait behind the backlog."""
    loading_since = asyncio.get_running_loop().time()
    pod = await harness.pod(load_seconds=2.5)
    gw = await harness.gateway(
        static_pods=[f"{MODEL}={pod.url}"],
        pod_concurrency=1,
        keepalive_interval_s=0,
        slo={"ttft_base_s": 1.5, "dispatch": dispatch, "late_max_wait_s": 60.0},
    )
    client = gw.client()
    old = [asyncio.create_task(_stream_text(client, f"old {i}")) for i in range(3)]
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.queued == 3, what="the backlog to queue")
    # 1.6 s into the pod's 2.5 s load (counted from its start, not from when the backlog was in:
    # on a busy machine queueing the backlog alone can take most of a second).
    await asyncio.sleep(max(0.0, loading_since + 1.6 - asyncio.get_running_loop().time()))
    assert queue.ready_pods == 0, "the pod turned Ready too early for this test"
    fresh = [asyncio.create_task(_stream_text(client, f"new {i}")) for i in range(2)]
    await asyncio.gather(*old, *fresh)

    events: list[Event] = []

    async def all_complete() -> bool:  # their last events come within the linger
        nonlocal events
        events = await read_events(redis, keys)
        return sum(e.type is EventType.COMPLETE for e in events) == 5

    await wait_for(all_complete, what="the five complete events")
    by_id = {e.request_id: e for e in events if e.type is EventType.ENQUEUE}
    assert {e.deadline_ms for e in by_id.values()} == {1500.0}
    arrival = sorted(by_id, key=lambda r: int(r.rsplit("-", 1)[1]))
    old_ids, new_ids = set(arrival[:3]), set(arrival[3:])
    order = [e.request_id for e in events if e.type is EventType.DISPATCH]
    if fresh_first:
        assert set(order[:2]) == new_ids, order
    else:
        assert set(order[:3]) == old_ids, order
    met = {e.request_id: e.deadline_met for e in events if e.type is EventType.FIRST_TOKEN}
    assert not any(met[r] for r in old_ids)
    if fresh_first:
        assert all(met[r] for r in new_ids)


async def test_keepalives_reach_a_queued_stream_and_the_openai_client_ignores_them(
    harness: Harness,
) -> None:
    pod = await harness.pod(load_seconds=1.0)
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"], keepalive_interval_s=0.15)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/v1/completions", json=body) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.read()
    head, sep, _ = raw.partition(b"data:")
    assert sep, raw
    assert head.count(b": keep-alive\n\n") >= 3, head  # ~1 s queued, one every 0.15 s
    assert raw.rstrip().endswith(b"data: [DONE]")

    # The same wait through the openai client: comments are skipped, the answer is whole.
    pod2 = await harness.pod(load_seconds=1.0)
    gw2 = await harness.gateway(static_pods=[f"{MODEL}={pod2.url}"], keepalive_interval_s=0.15)
    stream = await gw2.client().completions.create(
        model=MODEL, prompt="x", max_tokens=3, stream=True
    )
    chunks = [c async for c in stream]
    assert chunks
    assert "".join(c.choices[0].text for c in chunks if c.choices)


async def test_non_streaming_requests_get_no_keepalives(harness: Harness) -> None:
    pod = await harness.pod(load_seconds=0.6)
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"], keepalive_interval_s=0.1)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/v1/completions", json=body) as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "application/json"
        data = await resp.json()
    assert data["choices"][0]["text"]


async def test_a_queued_stream_that_times_out_ends_with_an_sse_error(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    gw = await harness.gateway(
        static_pods=[f"{MODEL}=http://127.0.0.1:9"],  # never ready
        keepalive_interval_s=0.1,
        max_queue_wait_s=0.5,
    )
    stream = await gw.client().completions.create(
        model=MODEL, prompt="x", max_tokens=3, stream=True
    )
    with pytest.raises(openai.APIError) as info:
        async for _ in stream:
            pass
    assert "no capacity" in str(info.value)
    events = await events_of(redis, keys, {"reject"})
    terminal = [e for e in events if e.type in (EventType.REJECT, EventType.COMPLETE)]
    assert [(e.type, e.status, e.reason) for e in terminal] == [
        (EventType.REJECT, 503, "queue_timeout")
    ]
    assert gw.state.scheduler.queues[MODEL].queued == 0


async def test_client_leaving_during_keepalives_is_a_cancel(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    gw = await harness.gateway(
        static_pods=[f"{MODEL}=http://127.0.0.1:9"], keepalive_interval_s=0.05
    )
    queue = gw.state.scheduler.queues[MODEL]
    body = {"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/v1/completions", json=body) as resp,
    ):
        first = await resp.content.readuntil(b"\n\n")
        assert first == b": keep-alive\n\n"
    await wait_for(lambda: queue.queued == 0, what="the queued request to leave")
    events = await events_of(redis, keys, {"cancel"})
    kinds = [e.type for e in events if e.type is not EventType.SNAPSHOT]
    assert kinds == [EventType.ENQUEUE, EventType.CANCEL]


async def test_snapshots_report_the_pod_cap(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    gw = await harness.gateway(
        static_pods=[f"{MODEL}=http://127.0.0.1:9"], pod_concurrency=16, snapshot_interval_ms=20
    )
    assert gw.state.settings.cap_for(MODEL) == 16

    async def snaps() -> list[Event]:
        return [e for e in await read_events(redis, keys) if e.type is EventType.SNAPSHOT]

    async def seen() -> bool:
        return bool(await snaps())

    await wait_for(seen, what="a snapshot")
    assert {e.pod_cap for e in await snaps()} == {16}
