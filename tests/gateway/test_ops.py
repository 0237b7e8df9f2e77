"""Operations: probes, /metrics, graceful drain, and several worker processes on one port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from gateway.server import serve
from surgescale.events import EventType, RedisClient, StreamKeys
from tests.gateway.conftest import MODEL, Harness, read_events, wait_for

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[2]


async def test_probes_and_metrics(harness: Harness) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"])
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    stream = await gw.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=True
    )
    _ = [c async for c in stream]
    async with aiohttp.ClientSession() as http:
        for path, status in (("/healthz", 200), ("/readyz", 200)):
            async with http.get(gw.url + path) as resp:
                assert resp.status == status, path
        async with http.get(gw.url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    expected = [
        f'surgescale_gateway_queue_depth{{model="{MODEL}"}} 0.0',
        f'surgescale_gateway_in_flight{{model="{MODEL}"}} 0.0',
        f'surgescale_gateway_ready_pods{{model="{MODEL}"}} 1.0',
        f'surgescale_gateway_requests_admitted_total{{model="{MODEL}"}} 1.0',
        f'surgescale_gateway_requests_completed_total{{model="{MODEL}",status="200"}} 1.0',
        f'surgescale_gateway_ttft_seconds_count{{model="{MODEL}"}} 1.0',
        f'surgescale_gateway_added_latency_seconds_count{{model="{MODEL}"}} 1.0',
        "surgescale_gateway_ready 1.0",
    ]
    for line in expected:
        assert line in text, line


async def test_graceful_drain(harness: Harness, redis: RedisClient, keys: StreamKeys) -> None:
    pod = await harness.pod()
    settings = harness.settings(
        static_pods=[f"{MODEL}={pod.url}"], drain_timeout_s=20.0, host="127.0.0.1"
    )
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(settings, stop=stop, handle_signals=False, on_listening=listening.set_result)
    )
    url = await asyncio.wait_for(listening, 10)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 150, "stream": True}
    async with aiohttp.ClientSession() as http:
        await wait_for(_ready_pods(http, url), what="pod ready")
        async with http.post(url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            first = await resp.content.readany()
            assert first
            stop.set()  # SIGTERM: stop admitting, drain
            await wait_for(_status_is(http, url + "/readyz", 503), what="readyz to turn 503")
            async with http.post(url + "/v1/completions", json={**body, "stream": False}) as late:
                assert late.status == 503
                assert (await late.json())["error"]["code"] == "draining"
            rest = await resp.content.read()
        assert (first + rest).rstrip().endswith(b"data: [DONE]")  # in-flight stream finished
    await asyncio.wait_for(server, 10)
    events = await read_events(redis, keys)
    assert [e.status for e in events if e.type is EventType.COMPLETE] == [200]
    assert [e.reason for e in events if e.type is EventType.REJECT] == ["draining"]


async def test_drain_timeout_cancels_what_is_left(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    pod = await harness.pod()
    settings = harness.settings(static_pods=[f"{MODEL}={pod.url}"], drain_timeout_s=0.3)
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(settings, stop=stop, handle_signals=False, on_listening=listening.set_result)
    )
    url = await asyncio.wait_for(listening, 10)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 20000, "stream": True}
    async with aiohttp.ClientSession() as http:
        await wait_for(_ready_pods(http, url), what="pod ready")
        async with http.post(url + "/v1/completions", json=body) as resp:
            await resp.content.readany()
            stop.set()
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.content.read()
    await asyncio.wait_for(server, 10)
    events = await read_events(redis, keys)
    cancels = [e for e in events if e.type is EventType.CANCEL]
    assert len(cancels) == 1
    assert cancels[0].pod == pod.url
    await wait_for(lambda: pod.engine.running == 0, what="the pod to drop the request")


async def test_two_workers_share_one_port(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    from sim.localredis.server import free_port

    pod = await harness.pod()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on in the loop
        [
            sys.executable, "-m", "gateway",
            "--workers", "2",
            "--allow-unauthenticated",
            "--port", str(port),
            "--static-pod", f"{MODEL}={pod.url}",
            "--redis-url", harness.redis_url,
            "--events-prefix", keys.prefix,
            "--gateway-id", "mw",
            "--snapshot-interval-ms", "50",
            "--log-level", "WARNING",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        async def both_workers() -> bool:
            gateways = {e.gateway for e in await read_events(redis, keys)}
            return gateways == {"mw-w0", "mw-w1"}

        await wait_for(both_workers, timeout=30, what="snapshots from both workers")
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await wait_for(_ready_pods(http, url), what="pod ready in a worker")
            body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
            for _ in range(4):
                # New connections each time, so the kernel may pick either worker.
                async with (
                    aiohttp.ClientSession() as one,
                    one.post(url + "/v1/completions", json=body) as resp,
                ):
                    assert resp.status == 200, await resp.text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ready_pods(http: aiohttp.ClientSession, url: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        async with http.get(url + "/metrics") as resp:
            return f'surgescale_gateway_ready_pods{{model="{MODEL}"}} 1.0' in await resp.text()

    return check


def _status_is(http: aiohttp.ClientSession, url: str, status: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        async with http.get(url) as resp:
            return resp.status == status

    return check
