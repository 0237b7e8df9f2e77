"""Reading the judged processes from outside: Prometheus text, /proc, the API server.

Nothing here imports the gateway or the controller: figures come from what they serve on
`/metrics` (prometheus_client's parser, through `sim.promtext`), from the kernel's view of their
process (`/proc/<pid>/fd`) and from plain HTTP GETs to the simulated API server.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import aiohttp

from sim.promtext import samples


def parse_metric(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The sum of the samples of `name` whose labels include `labels` (None if there is none)."""
    values = [value for _, value in samples(text, name, labels)]
    return sum(values) if values else None


async def scrape(url: str, *, timeout_s: float = 2.0) -> str:
    """GET a /metrics page; '' when it does not answer."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp,
        ):
            return await resp.text() if resp.status == 200 else ""
    except (aiohttp.ClientError, TimeoutError, OSError):
        return ""


async def metric(
    url: str, name: str, labels: dict[str, str] | None = None, *, timeout_s: float = 2.0
) -> float | None:
    return parse_metric(await scrape(url, timeout_s=timeout_s), name, labels)


def open_fds(pid: int) -> int:
    """Open file descriptors of a process (Linux /proc; -1 where unreadable)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def get_json(url: str, *, timeout_s: float = 2.0) -> dict[str, object] | None:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp,
        ):
            if resp.status != 200:
                return None
            data = await resp.json()
            return data if isinstance(data, dict) else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, every_s: float = 0.1
) -> float | None:
    """Poll `check` until it is true; the seconds it took, or None after `timeout_s`."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start >= timeout_s:
            return None
        await asyncio.sleep(every_s)
