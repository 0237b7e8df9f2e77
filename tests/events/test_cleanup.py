"""Benchmarks leave nothing behind in Redis, even when they are stopped half-way (issue 15: runs
cut short by a timeout left gigabytes of streams in a shared Redis)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from sim.localredis.server import RedisServer, start_private_redis
from surgescale.events import RedisClient, close, connect
from tests.waiting import wait_until


@pytest.fixture
def server() -> Iterator[RedisServer]:
    srv = start_private_redis()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[RedisClient]:
    client = connect(server.url, timeout=5.0)
    yield client
    await close(client)


async def bench_keys(client: RedisClient) -> list[str]:
    return sorted([k.decode() async for k in client.scan_iter(match="bench-*")])


async def test_the_events_bench_cleans_up_when_stopped_by_sigterm(
    server: RedisServer, admin: RedisClient
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "surgescale", "bench", "events", "--events", "2000000",
        "--redis-url", server.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip

    async def entries_written() -> int:
        assert proc.returncode is None, "the bench ended before it was stopped"
        total = 0
        for key in await bench_keys(admin):
            if await admin.type(key) == b"stream":
                total += int(await admin.xlen(key))
        return total if total >= 1_000 else 0

    try:
        await wait_until(entries_written, timeout=60.0, interval=0.1, what="1,000 entries written")
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await bench_keys(admin) == [], out.decode()
    assert b"left behind in Redis: 0 keys" in out


async def test_keys_of_runs_killed_outright_are_swept_by_the_next(admin: RedisClient) -> None:
    from sim.benches import cleanup

    old_ms = int(time.time() * 1000) - 3_600_000
    await admin.xadd("bench-dead:events:{m}", {b"e": b"{}"}, id=f"{old_ms}-0")
    await admin.sadd("bench-dead:streams", "bench-dead:events:{m}")
    await admin.xadd("bench-live:events:{m}", {b"e": b"{}"})
    await admin.sadd("bench-live:streams", "bench-live:events:{m}")
    await admin.set("other:key", b"not ours")
    assert await cleanup.sweep_stale(admin, like="bench-", idle_s=600.0) == 2
    assert await bench_keys(admin) == ["bench-live:events:{m}", "bench-live:streams"]
    info: Any = await admin.exists("other:key")
    assert info == 1
