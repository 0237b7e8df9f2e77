"""A tiny work queue for the simulated controllers: mark keys dirty, reconcile them in batches.

Store listeners run synchronously inside writes, so they only `mark()` what changed; the
reconciler's task wakes, takes the whole dirty set (bursts coalesce) and calls `reconcile(key)`
for each, yielding to the event loop between batches. Errors are logged, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


class Reconciler(Generic[K]):
    def __init__(self, name: str, reconcile: Callable[[K], None]) -> None:
        self.name = name
        self._reconcile = reconcile
        self._dirty: dict[K, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.passes = 0

    def mark(self, key: K) -> None:
        self._dirty[key] = None
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"reconcile-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            keys = list(self._dirty)
            self._dirty.clear()
            for key in keys:
                try:
                    self._reconcile(key)
                except Exception:
                    log.exception("%s: reconcile of %r failed", self.name, key)
            self.passes += 1
            await asyncio.sleep(0)
