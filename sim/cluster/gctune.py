"""Keep full garbage collections from stalling the simulated cluster's event loop.

With thousands of pods the heap holds millions of small dicts and lists; CPython's automatic
full (generation 2) collection walks all of them and stops the loop for 0.5-2 s, which breaks
"lifecycles keep real time". `FullGcPolicy` turns automatic full collections off (young
generations still collect as usual) and runs one full collection every `every_s` wall seconds
instead, restoring the previous thresholds when stopped. It changes process-global state, so
only whoever owns the process (the CLI, the benchmark) should enable it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc


class FullGcPolicy:
    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._saved: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._saved is not None:
            return
        self._saved = gc.get_threshold()
        gen0, gen1, _ = self._saved
        gc.set_threshold(gen0, gen1, 1_000_000_000)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="full-gc")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            gc.collect()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
