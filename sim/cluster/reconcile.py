"""A tiny work queue for the simulated controllers: mark keys dirty, reconcile them in batches.

Store listeners run synchronously inside writes, so they only `mark()` what changed; the
reconciler's task wakes, takes the whole dirty set (bursts coalesce) and calls `reconcile(key)`
for each, yielding to the event loop between batches. Errors are logged, never fatal.
"""

from __future__ import annotations

import asyncio
import collections
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


class IterationBudget:
    """Lets at most `per_iteration` callers through per event-loop iteration, in FIFO order.

    Many pod tasks wake on the same tick (every pod of a scale-up becomes Ready together); each
    write costs a fraction of a millisecond, so hundreds in one iteration stall the loop. Tasks
    `await budget.take()` before writing; the rest wait on futures released a batch per
    iteration, so timers and HTTP requests get their turn in between.
    """

    def __init__(self, per_iteration: int = 50) -> None:
        self.per_iteration = per_iteration
        self._left = per_iteration
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._scheduled = False

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:
        self._scheduled = False
        self._left = self.per_iteration
        while self._left > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._left -= 1
        if self._waiters or self._left < self.per_iteration:
            self._schedule()

    async def take(self) -> None:
        if self._left > 0 and not self._waiters:
            self._left -= 1
            self._schedule()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._schedule()
        await waiter
