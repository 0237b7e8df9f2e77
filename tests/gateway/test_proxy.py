"""The proxy through the official `openai` client to real simulated pods, with its events."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from surgescale.events import Event, EventType, RedisClient, StreamKeys
from tests.gateway.conftest import MODEL, Harness, events_of

pytestmark = pytest.mark.timeout(60)


def _accounting(events: list[Event]) -> tuple[int, int]:
    """Queue depth and in-flight count implied by request events (the controller's rules)."""
    queued = in_flight = 0
    for e in events:
        t = e.type
        if t is EventType.ENQUEUE:
            queued += 1
        elif t is EventType.DISPATCH:
            queued -= 1
            in_flight += 1
        elif t is EventType.COMPLETE:
            in_flight -= 1
        elif t is EventType.CANCEL:
            if e.pod is None:
                queued -= 1
            else:
                in_flight -= 1
        elif t is EventType.REJECT and e.queue_ms is not None:
            queued -= 1
    return queued, in_flight


async def test_chat_non_stream(harness: Harness, redis: RedisClient, keys: StreamKeys) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"])
    client = gw.client()
    await _wait_ready(gw)
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=12
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 12
    events = await events_of(redis, keys, {"enqueue", "dispatch", "complete"})
    request = [e for e in events if e.type is not EventType.SNAPSHOT]
    assert [e.type for e in request] == [EventType.ENQUEUE, EventType.DISPATCH, EventType.COMPLETE]
    assert len({e.request_id for e in request}) == 1
    enqueue, dispatch, complete = request
    assert enqueue.prompt_tokens is not None
    assert enqueue.prompt_tokens > 0
    assert dispatch.pod == pod.url
    assert dispatch.queue_ms is not None
    assert complete.status == 200
    assert complete.output_tokens == 12
    assert complete.e2e_ms is not None
    assert complete.queue_ms == dispatch.queue_ms
    assert complete.e2e_ms >= dispatch.queue_ms
    assert _accounting(request) == (0, 0)


async def test_chat_stream_forwards_chunks_and_strips_usage(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"])
    await _wait_ready(gw)
    stream = await gw.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "count"}], max_tokens=20, stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert len(chunks) >= 20  # one per token (plus the role chunk), not one blob
    assert all(c.usage is None for c in chunks)  # the gateway asked for usage, and stripped it
    events = await events_of(redis, keys, {"first_token", "complete"})
    first = next(e for e in events if e.type is EventType.FIRST_TOKEN)
    complete = next(e for e in events if e.type is EventType.COMPLETE)
    assert first.ttft_ms is not None
    assert complete.ttft_ms is not None
    assert complete.output_tokens == 20  # from the usage chunk
    assert complete.tpot_ms is not None
    assert complete.tpot_ms > 0
    assert complete.e2e_ms is not None
    assert complete.e2e_ms > complete.ttft_ms


async def test_stream_usage_kept_when_client_asks(harness: Harness) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"])
    await _wait_ready(gw)
    stream = await gw.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage async for c in stream if c.usage is not None]
    assert len(usage) == 1
    assert usage[0].completion_tokens == 5


async def test_completions_stream_and_non_stream(harness: Harness) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"])
    await _wait_ready(gw)
    client = gw.client()
    plain = await client.completions.create(model=MODEL, prompt="once upon", max_tokens=7)
    assert plain.choices[0].text
    assert plain.usage is not None
    assert plain.usage.completion_tokens == 7
    stream = await client.completions.create(
        model=MODEL, prompt="once upon", max_tokens=9, stream=True
    )
    pieces = [c.choices[0].text async for c in stream if c.choices]
    assert len(pieces) == 9


async def test_models_and_errors(harness: Harness) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"], max_body_bytes=2048)
    client = gw.client()
    listed = await client.models.list()
    assert [m.id for m in listed.data] == [MODEL]
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model=MODEL, messages=[])
    assert bad.value.param == "messages"
    async with aiohttp.ClientSession() as http:
        big = {"model": MODEL, "prompt": "x" * 4096}
        async with http.post(gw.url + "/v1/completions", json=big) as resp:
            assert resp.status == 413
            body = await resp.json()
            assert set(body["error"]) == {"message", "type", "param", "code"}
        huge = {"X-Padding": "x" * 10_000}
        async with http.post(gw.url + "/v1/completions", json=big, headers=huge) as resp:
            assert resp.status in (400, 431)  # header over the limit
        async with http.post(gw.url + "/v1/completions", data=b"{") as resp:
            assert resp.status == 400
            assert "JSON" in (await resp.json())["error"]["message"]


async def test_bearer_keys(harness: Harness) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"], api_keys=["sekret"])
    await _wait_ready(gw)
    with pytest.raises(openai.AuthenticationError):
        await gw.client(api_key="wrong").models.list()
    reply = await gw.client(api_key="sekret").completions.create(
        model=MODEL, prompt="x", max_tokens=2
    )
    assert reply.choices[0].text


async def _wait_ready(gw: object) -> None:
    from tests.gateway.conftest import RunningGateway, wait_for

    assert isinstance(gw, RunningGateway)
    queues = gw.state.scheduler.queues
    await wait_for(
        lambda: all(q.ready_pods > 0 for q in queues.values()), what="pods to turn ready"
    )
