"""Forwarding a stream whose usage chunk arrives split across reads (`gateway.streaming`).

Whole SSE events without a usage chunk go straight through; a read that ends inside an event is
framed, so a usage chunk the gateway asked for is still seen whole and stripped. The upstream
here is a raw aiohttp server that cuts its events where it likes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from surgescale.events import EventType, RedisClient, StreamKeys
from tests.gateway.conftest import MODEL, Harness, read_events, wait_for

TOKEN = b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":"x"}]}\n\n'
USAGE = (
    b'data: {"id":"c","object":"text_completion","choices":[],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":7,"total_tokens":8}}\n\n'
)


@pytest.fixture
async def cutting_upstream() -> AsyncIterator[str]:
    """Three tokens, then the usage chunk cut in two (separate TCP writes), then [DONE]."""

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["stream_options"] == {"include_usage": True}  # the gateway asked for it
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(3):
            await resp.write(TOKEN)
            await asyncio.sleep(0.01)
        cut = USAGE.index(b"usage") + 2  # inside the marker the gateway looks for
        await resp.write(USAGE[:cut])
        await asyncio.sleep(0.05)
        await resp.write(USAGE[cut:] + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_split_usage_chunk_is_stripped_whole(
    harness: Harness, redis: RedisClient, keys: StreamKeys, cutting_upstream: str
) -> None:
    gw = await harness.gateway(static_pods=[f"{MODEL}={cutting_upstream}"])
    await wait_for(lambda: gw.state.scheduler.queues[MODEL].ready_pods == 1, what="ready pod")
    body = {"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/v1/completions", json=body) as resp,
    ):
        assert resp.status == 200
        text = await resp.read()
    assert text == TOKEN * 3 + b"data: [DONE]\n\n"  # tokens untouched, usage gone

    async def completed() -> bool:
        events = await read_events(redis, keys)
        return any(e.type is EventType.COMPLETE for e in events)

    await wait_for(completed, what="the complete event")
    (complete,) = [e for e in await read_events(redis, keys) if e.type is EventType.COMPLETE]
    assert complete.output_tokens == 7  # read from the usage chunk, not counted (3)
