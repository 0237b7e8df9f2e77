"""The pod runtime over real HTTP on loopback: start, cold start, serve, stop."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from sim.pod.runtime import PodOptions, RunningPod, start_pod


def _ready(pod: RunningPod) -> bool:
    """Read `ready` through a call, so the type checker does not pin it between reads."""
    return pod.ready


async def test_start_serve_and_stop() -> None:
    pod = await start_pod(PodOptions(model="llama3-8b"))
    try:
        assert pod.url.startswith("http://127.0.0.1:")
        assert _ready(pod)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{pod.url}/health") as r:
                assert r.status == 200
            body = {
                "model": "llama3-8b",
                "messages": [{"role": "user", "content": "x" * 400}],
                "max_tokens": 7,
                "stream": True,
            }
            chunks = []
            async with http.post(f"{pod.url}/v1/chat/completions", json=body) as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/event-stream")
                async for line in r.content:
                    if line.startswith(b"data: "):
                        chunks.append(line[6:].strip())
            assert chunks[-1] == b"[DONE]"
            parsed = [orjson.loads(c) for c in chunks[:-1]]
            content = [p["choices"][0]["delta"].get("content") for p in parsed]
            assert content[0] == ""  # the role chunk
            assert len([c for c in content[1:] if c]) == 7
            assert parsed[-1]["choices"][0]["finish_reason"] == "length"
    finally:
        await pod.stop()
    assert not _ready(pod)
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(f"{pod.url}/health") as r:
                raise AssertionError(f"stopped pod still answers: {r.status}")
        except aiohttp.ClientConnectionError:
            pass


async def test_cold_start_health_turns_200_after_load() -> None:
    pod = await start_pod(PodOptions(model="m", load_seconds=0.3))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{pod.url}/health") as r:
                assert r.status == 503
            body = {"model": "m", "prompt": "hi", "max_tokens": 2}
            async with http.post(f"{pod.url}/v1/completions", json=body) as r:
                assert r.status == 503
                assert (await r.json())["error"]["code"] == 503
            assert not _ready(pod)
            await pod.wait_ready(timeout=5)
            assert _ready(pod)
            async with http.get(f"{pod.url}/health") as r:
                assert r.status == 200
            async with http.post(f"{pod.url}/v1/completions", json=body) as r:
                assert r.status == 200
                assert (await r.json())["usage"]["completion_tokens"] == 2
    finally:
        await pod.stop()


async def test_stop_lets_in_flight_finish_within_grace() -> None:
    pod = await start_pod(PodOptions(model="m"))
    async with aiohttp.ClientSession() as http:
        body = {"model": "m", "prompt": "hello", "max_tokens": 30}
        req = asyncio.ensure_future(http.post(f"{pod.url}/v1/completions", json=body))
        for _ in range(1000):
            if pod.engine.running:
                break
            await asyncio.sleep(0.005)
        await pod.stop(grace_seconds=10.0)
        resp = await req
        assert resp.status == 200
        assert (await resp.json())["usage"]["completion_tokens"] == 30
        resp.release()


async def test_many_pods_share_one_process() -> None:
    pods = [await start_pod(PodOptions(model="m", seed=i)) for i in range(5)]
    try:
        assert len({p.url for p in pods}) == 5
        async with aiohttp.ClientSession() as http:
            for p in pods:
                async with http.get(f"{p.url}/v1/models") as r:
                    assert (await r.json())["data"][0]["id"] == "m"
    finally:
        await asyncio.gather(*(p.stop() for p in pods))
