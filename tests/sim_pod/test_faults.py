"""Fault injection over real HTTP: error rate, slowdown, hang, crash; at start and at run time."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from sim.pod.faults import Faults
from sim.pod.runtime import PodOptions, RunningPod, start_pod

BODY = {"model": "llama3-8b", "prompt": "hello", "max_tokens": 3}


async def test_error_rate_set_at_start_answers_500(http: aiohttp.ClientSession) -> None:
    pod = await start_pod(PodOptions(model="llama3-8b", faults=Faults(error_rate=1.0)))
    try:
        async with http.post(pod.url + "/v1/completions", json=BODY) as r:
            assert r.status == 500
            err = (await r.json())["error"]
        assert err["code"] == 500
        assert err["type"] == "InternalServerError"
        async with http.get(pod.url + "/health") as r:
            assert r.status == 200
    finally:
        await pod.stop()


async def test_partial_error_rate_is_seeded_and_partial(http: aiohttp.ClientSession) -> None:
    pod = await start_pod(PodOptions(model="llama3-8b", faults=Faults(error_rate=0.5), seed=3))
    try:
        statuses = []
        for _ in range(40):
            async with http.post(pod.url + "/v1/completions", json=BODY) as r:
                statuses.append(r.status)
        assert set(statuses) == {200, 500}
    finally:
        await pod.stop()


async def test_admin_endpoint_sets_and_reports_faults(
    pod: RunningPod, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        pod.url + "/admin/faults", json={"slowdown": 3.0, "error_rate": 0.25}
    ) as r:
        assert r.status == 200
        assert await r.json() == {
            "crash": False,
            "hang": False,
            "error_rate": 0.25,
            "slowdown": 3.0,
        }
    assert pod.engine.slowdown == 3.0
    async with http.get(pod.url + "/admin/faults") as r:
        assert (await r.json())["error_rate"] == 0.25
    for bad in ({"slowdown": 0}, {"error_rate": 2}, {"explode": True}):
        async with http.post(pod.url + "/admin/faults", json=bad) as r:
            assert r.status == 400
            assert "error" in await r.json()
    assert pod.faults == Faults(slowdown=3.0, error_rate=0.25)


async def test_hang_freezes_requests_until_cleared(
    pod: RunningPod, http: aiohttp.ClientSession
) -> None:
    await pod.set_faults(hang=True)
    health = asyncio.ensure_future(http.get(pod.url + "/health"))
    done, _ = await asyncio.wait([health], timeout=0.3)
    assert not done  # frozen
    await pod.set_faults(hang=False)
    resp = await asyncio.wait_for(health, 10)
    assert resp.status == 200
    resp.release()


async def test_crash_drops_connections_and_refuses_new_ones(http: aiohttp.ClientSession) -> None:
    pod = await start_pod(PodOptions(model="llama3-8b"))
    stream_body = {**BODY, "max_tokens": 2000, "stream": True}
    async with http.post(pod.url + "/v1/completions", json=stream_body) as r:
        assert r.status == 200
        await r.content.readline()
        async with (
            aiohttp.ClientSession() as admin,
            admin.post(pod.url + "/admin/faults", json={"crash": True}) as a,
        ):
            assert a.status == 200
        with pytest.raises(aiohttp.ClientError):
            async for _ in r.content:
                pass
    for _ in range(200):
        if pod.stopped:
            break
        await asyncio.sleep(0.01)
    assert not pod.ready
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(pod.url + "/health"):
            pass
    await pod.stop()  # idempotent after a crash
