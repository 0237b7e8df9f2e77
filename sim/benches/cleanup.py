"""Leaving nothing behind in Redis: key clean-up for benchmarks and tools that use a prefix.

- `delete_prefix(client, prefix)`: delete every key under `prefix:` (SCAN, never KEYS);
- `leftover(client, prefix)`: what is still there (keys, bytes by MEMORY USAGE), for the report;
- `sweep_stale(client, like="bench-", idle_s=...)`: remove the keys of earlier runs that were
  killed before their own clean-up ran (SIGKILL, a lost machine): a prefix whose streams have had
  no entry for `idle_s` is gone;
- `cancel_on_signals()`: SIGTERM and SIGINT cancel the running task, so its `finally` blocks (the
  clean-up) run instead of the process dying where it stands.

Benchmarks use all four: sweep at start, clean up in `finally`, and print what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

from surgescale.events.client import RedisClient


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def delete_prefix(client: RedisClient, prefix: str) -> int:
    """Delete every key named `prefix:*`; how many were deleted."""
    deleted = 0
    batch: list[bytes | str] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=1_000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(await client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(await client.unlink(*batch))
    return deleted


async def leftover(client: RedisClient, prefix: str) -> tuple[int, int]:
    """(keys, bytes) still stored under `prefix:`."""
    keys = 0
    size = 0
    async for key in client.scan_iter(match=f"{prefix}:*", count=1_000):
        keys += 1
        size += int(await client.memory_usage(key) or 0)
    return keys, size


async def sweep_stale(client: RedisClient, *, like: str = "bench-", idle_s: float = 600.0) -> int:
    """Delete the keys of prefixes `like*` whose streams got no entry for `idle_s` (runs that
    were killed before cleaning up); how many keys were deleted."""
    newest: dict[str, int] = {}
    async for raw in client.scan_iter(match=f"{like}*", count=1_000):
        key = _text(raw)
        prefix = key.split(":", 1)[0]
        newest.setdefault(prefix, 0)
        if _text(await client.type(key)) == "stream":
            info: Any = await client.xinfo_stream(key)
            last = _text(info.get("last-generated-id", b"0-0"))
            newest[prefix] = max(newest[prefix], int(last.split("-")[0]))
    cutoff_ms = int((time.time() - idle_s) * 1000)
    deleted = 0
    for prefix, last_ms in newest.items():
        if last_ms < cutoff_ms:
            deleted += await delete_prefix(client, prefix)
    return deleted


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """Within a running task: SIGTERM/SIGINT cancel it (so its clean-up runs), then are restored."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, task.cancel if task is not None else lambda: None)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
