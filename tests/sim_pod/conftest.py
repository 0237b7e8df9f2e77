"""A running simulated pod per test (real HTTP on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from sim.pod.runtime import PodOptions, RunningPod, start_pod


@pytest.fixture
async def pod() -> AsyncIterator[RunningPod]:
    running = await start_pod(PodOptions(model="llama3-8b", seed=1))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
