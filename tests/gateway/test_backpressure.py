"""Backpressure: a client that stops reading stops the gateway's upstream read too.

The upstream here is a firehose (an aiohttp server streaming SSE as fast as its socket takes it),
which a simulated pod, bound to its engine's pace, cannot be. If the gateway buffered instead of
waiting for the client, the firehose would keep writing; with backpressure its writes stall once
the socket and stream buffers between it and the silent client are full.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from tests.gateway.conftest import MODEL, Harness, wait_for

CHUNK = b'data: {"choices":[{"index":0,"text":"' + b"x" * 1000 + b'"}]}\n\n'


async def test_slow_client_stalls_the_upstream(harness: Harness) -> None:
    written = 0

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def firehose(request: web.Request) -> web.StreamResponse:
        nonlocal written
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        while True:
            await resp.write(CHUNK)  # waits while the gateway is not reading
            written += len(CHUNK)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", firehose)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        gw = await harness.gateway(static_pods=[f"{MODEL}=http://{host}:{port}"])
        queue = gw.state.scheduler.queues[MODEL]
        await wait_for(lambda: queue.ready_pods == 1, what="firehose ready")
        gw_host, gw_port = gw.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(gw_host, int(gw_port))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        body = b'{"model": "%s", "prompt": "x", "stream": true}' % MODEL.encode()
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the response head; then the client reads nothing
        await wait_for(lambda: written > 0, what="the firehose to start")
        previous = -1
        for _ in range(40):  # up to 8 s for the buffers to fill and the writes to stall
            await asyncio.sleep(0.2)
            if written == previous:
                break
            previous = written
        assert written == previous, f"the upstream kept writing ({written:,} bytes)"
        assert written < 64 * 1024 * 1024, f"{written:,} bytes went somewhere"

        # Reading again lets the stream flow again.
        async def drained() -> bool:
            await asyncio.wait_for(reader.read(1024 * 1024), 5)
            return written > previous

        await wait_for(drained, what="the stream to flow again")
        writer.close()
        await wait_for(lambda: queue.in_flight == 0, what="the slot to be freed on disconnect")
    finally:
        await runner.cleanup()
