"""Shared pod capacity (`gateway.shares`): many gateway instances never overrun one pod's cap.

The fleet test runs the real topology: two gateway replicas, each `gateway.server.run` with two
worker processes (four instances), real Redis, and one simulated pod (cap 16, `max_num_seqs`
16) served from a thread of this process so that its engine can be watched: every request the
engine takes records how many it holds, and the most it ever held must stay at or below 16 under
random arrivals (a hypothesis property), while the overflow waits in the gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.server import run, run_worker
from gateway.settings import GatewaySettings
from sim.localredis.server import free_port
from sim.pod.runtime import PodOptions, RunningPod, start_pod
from tests.gateway.conftest import MODEL, Harness, wait_for

CAP = 16


# ----------------------------------------------------------------- the pod
@dataclass
class WatchedPod:
    """A simulated pod in its own thread and event loop; `peak` is the most requests its engine
    held at once (running + waiting), `taken` how many it took."""

    cap: int
    url: str = ""
    peak: int = 0
    taken: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="watched-pod", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the simulated pod did not start within 30 s")

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        pod: RunningPod = await start_pod(PodOptions(model=MODEL, max_num_seqs=self.cap))
        engine = pod.engine
        add = engine.add

        def watched_add(request_id: str, prompt_tokens: int, max_tokens: int, now: float) -> None:
            add(request_id, prompt_tokens, max_tokens, now)
            self.taken += 1
            self.peak = max(self.peak, engine.running + engine.waiting)

        engine.add = watched_add  # type: ignore[method-assign]
        self.url = pod.url
        self._ready.set()
        await self._stop.wait()
        await pod.stop()

    def reset(self) -> None:
        self.peak = 0

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


# ------------------------------------------------------------- the gateways
def _settings(redis_url: str, prefix: str, pod_url: str, **kw: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "port": free_port(),
        "static_pods": [f"{MODEL}={pod_url}"],
        "pod_concurrency": CAP,
        "redis_url": redis_url,
        "events_prefix": prefix,
        "health_interval_s": 0.05,
        "allow_unauthenticated": True,
        "log_level": "WARNING",
        "capacity_lease_s": 5.0,  # an instance stalled this long on a busy machine counts as dead
        "drain_timeout_s": 2.0,
    }
    values.update(kw)
    return GatewaySettings(**values)


@contextlib.contextmanager
def _spawned(target: Any, settings: GatewaySettings) -> Iterator[BaseProcess]:
    proc: BaseProcess = multiprocessing.get_context("spawn").Process(
        target=target, args=(settings,), daemon=False
    )
    proc.start()
    try:
        yield proc
    finally:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)  # the supervisor stops and drains its workers
            proc.join(15)
            if proc.is_alive():
                proc.kill()
                proc.join()


async def _metric(url: str, name: str) -> float | None:
    """One `model`-labelled sample of a gateway's /metrics (whichever worker answers)."""
    want = f'{name}{{model="{MODEL}"}} '
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(want):
                return float(line[len(want) :])
    return None


async def _wait_fleet(urls: list[str], instances: int) -> None:
    async def synced() -> bool:
        try:
            for url in urls:
                if await _metric(url, "surgescale_gateway_capacity_instances") != instances:
                    return False
        except aiohttp.ClientError:
            return False
        return True

    await wait_for(synced, timeout=60, what=f"{instances} gateway instances sharing the pod")


async def _stream(http: aiohttp.ClientSession, url: str, tokens: int) -> int:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": tokens, "stream": True}
    async with http.post(url + "/v1/completions", json=body) as resp:
        await resp.read()
        return resp.status


async def _send(arrivals: list[tuple[int, float, int]], urls: list[str]) -> list[int]:
    """Each arrival: (gateway index, seconds after the previous one, output tokens)."""
    # A new connection per request, so SO_REUSEPORT spreads them over both workers.
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks: list[asyncio.Task[int]] = []
        for index, gap, tokens in arrivals:
            await asyncio.sleep(gap)
            tasks.append(asyncio.create_task(_stream(http, urls[index % len(urls)], tokens)))
        return list(await asyncio.gather(*tasks))


@dataclass
class Fleet:
    pod: WatchedPod
    urls: list[str]


@pytest.fixture(scope="module")
def fleet(redis_url: str) -> Iterator[Fleet]:
    """Two gateway replicas x two workers sharing one simulated pod with cap 16."""
    pod = WatchedPod(CAP)
    pod.start()
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        with contextlib.ExitStack() as stack:
            urls = []
            for name in ("gw-a", "gw-b"):
                s = _settings(redis_url, prefix, pod.url, workers=2, gateway_id=name)
                stack.enter_context(_spawned(run, s))
                urls.append(f"http://127.0.0.1:{s.port}")
            asyncio.run(_wait_fleet(urls, 4))
            yield Fleet(pod=pod, urls=urls)
    finally:
        pod.stop()
        asyncio.run(_forget(redis_url, prefix))


async def _forget(redis_url: str, prefix: str) -> None:
    from surgescale.events import close, connect

    client = connect(redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)
    finally:
        await close(client)


_ARRIVALS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),  # which gateway (and, by connection, which worker)
        st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.005, 0.02]),  # bursts and trickles
        st.integers(min_value=1, max_value=40),  # output tokens
    ),
    min_size=20,
    max_size=70,
)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(arrivals=_ARRIVALS)
def test_fleet_never_exceeds_the_pod_cap(
    fleet: Fleet, arrivals: list[tuple[int, float, int]]
) -> None:
    fleet.pod.reset()
    statuses = asyncio.run(_send(arrivals, fleet.urls))
    assert statuses == [200] * len(arrivals)
    assert fleet.pod.peak <= CAP, f"the pod held {fleet.pod.peak} requests (cap {CAP})"


def test_overload_fills_the_pod_and_queues_in_the_gateways(fleet: Fleet) -> None:
    """64 long requests over all four instances: the pod runs (nearly) 16, the rest wait in the
    gateways (each has its fair share, idle shares are lent), and all complete. An instance
    whose queue ran dry lends all but one slot of headroom, so up to three slots may idle."""
    fleet.pod.reset()
    rng = random.Random(7)
    arrivals = [(i % 4, 0.0, rng.randint(60, 90)) for i in range(64)]
    statuses = asyncio.run(_send(arrivals, fleet.urls))
    assert statuses == [200] * 64
    assert CAP - 3 <= fleet.pod.peak <= CAP


# ---------------------------------------------------------------- fallback
async def test_fallback_share_when_redis_is_unreachable(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """No Redis: each instance takes the safe share cap // fallback_instances, says so in
    /metrics and once in the log, and the overflow waits in the gateway."""
    pod = WatchedPod(CAP)
    pod.start()
    try:
        caplog.set_level(logging.WARNING, logger="gateway.shares")
        gw = await harness.gateway(
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            static_pods=[f"{MODEL}={pod.url}"],
            pod_concurrency=CAP,
            capacity_fallback_instances=4,
        )

        async def shown() -> bool:
            return (
                await _metric(gw.url, "surgescale_gateway_ready_pods") == 1.0
                and await _metric(gw.url, "surgescale_gateway_capacity_fallback") == 1.0
                and await _metric(gw.url, "surgescale_gateway_capacity_share_slots") == CAP // 4
            )

        await wait_for(shown, what="the safe share of a ready pod in /metrics")
        statuses = await _send([(0, 0.0, 40)] * 12, [gw.url])
        assert statuses == [200] * 12
        assert pod.peak == CAP // 4
        warnings = [r for r in caplog.records if r.name == "gateway.shares"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "safe share" in warnings[0].getMessage()
    finally:
        await asyncio.to_thread(pod.stop)


# ------------------------------------------------------------ a dead peer
async def test_a_dead_instance_share_is_reclaimed(harness: Harness) -> None:
    """A peer killed with SIGKILL gives nothing back; its grant is reclaimed once its lease
    lapses, and the survivor then uses the whole pod."""
    pod = WatchedPod(CAP)
    pod.start()
    try:
        mine = harness.settings(
            static_pods=[f"{MODEL}={pod.url}"], pod_concurrency=CAP, capacity_lease_s=1.0
        )
        gw = await harness.gateway(mine)
        shares = gw.state.shares
        assert shares is not None
        await wait_for(lambda: shares.limits[MODEL].get(pod.url) == CAP, what="the whole pod")
        other = _settings(
            harness.redis_url,
            harness.keys.prefix,
            pod.url,
            gateway_id="gw-doomed",
            workers=1,
            capacity_lease_s=1.0,
        )
        with _spawned(run_worker, other) as proc:
            await wait_for(
                lambda: shares.instances()[MODEL] == 2, timeout=30, what="the peer joining"
            )
            await wait_for(
                lambda: shares.limits[MODEL][pod.url] == CAP // 2, what="half the pod each"
            )
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            await wait_for(
                lambda: shares.limits[MODEL][pod.url] == CAP, timeout=10, what="the pod back whole"
            )
        assert shares.instances()[MODEL] == 1
        # Long streams, so all 16 are at the pod together however slowly the 20 connect.
        statuses = await _send([(0, 0.0, 300)] * 20, [gw.url])
        assert statuses == [200] * 20
        assert pod.peak == CAP
    finally:
        await asyncio.to_thread(pod.stop)


# ------------------------------------------------------- one /metrics view
def test_metrics_sum_the_workers_whichever_answers(fleet: Fleet) -> None:
    """A scrape reaches one worker at random; every worker answers with the replica's sum, so
    repeated scrapes agree and the replicas' counters add up to the requests sent."""
    admitted = "surgescale_gateway_requests_admitted_total"

    async def scrape(url: str) -> set[float | None]:
        return {await _metric(url, admitted) for _ in range(8)}

    async def workers(url: str) -> set[str]:
        async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
            return {
                line
                for line in (await resp.text()).splitlines()
                if line.startswith("surgescale_gateway_workers_reporting ")
            }

    async def run_it() -> None:
        before = [await _metric(url, admitted) or 0.0 for url in fleet.urls]
        statuses = await _send([(i, 0.0, 2) for i in range(24)], fleet.urls)
        assert statuses == [200] * 24
        after = []
        for url in fleet.urls:
            seen = await scrape(url)
            assert len(seen) == 1, f"scrapes of {url} disagree: {seen}"
            after.append(seen.pop() or 0.0)
            assert await workers(url) == {"surgescale_gateway_workers_reporting 2.0"}
        assert sum(after) - sum(before) == 24

    asyncio.run(run_it())
