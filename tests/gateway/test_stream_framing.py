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


@pytest.mark.parametrize("version", ["1.0", "1.1"])
async def test_a_raw_client_gets_the_stream_framed_for_its_http_version(
    harness: Harness, version: str
) -> None:
    """Chunks after the first go to the socket directly (`gateway.streaming._ChunkWriter`):
    HTTP/1.1 gets the chunked framing aiohttp would write, HTTP/1.0 (no chunked encoding) the
    bare events, its connection closed at the end."""
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"], health_interval_s=30.0)
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"model": "%s", "prompt": "x", "max_tokens": 12, "stream": true}' % MODEL.encode()
    writer.write(
        b"POST /v1/completions HTTP/%s\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (version.encode(), len(body), body)
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 30)  # to the end: the gateway closes
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.")
    assert b" 200 " in head.split(b"\r\n")[0]
    if version == "1.1":
        assert b"transfer-encoding: chunked" in head.lower()
        decoded = b""
        rest = payload
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded += rest[:size]
            assert rest[size : size + 2] == b"\r\n"
            rest = rest[size + 2 :]
    else:
        assert b"transfer-encoding" not in head.lower()
        decoded = payload
    events = [e for e in decoded.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    assert events[-1] == b"data: [DONE]"
    assert len(events) == 13  # 12 tokens and [DONE] (the usage chunk asked for was stripped)
