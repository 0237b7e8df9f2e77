"""The faults bench's load: steady streaming requests and closed-loop bursts, every outcome kept.

`Load.steady(rate)` sends streaming `/v1/completions` at a fixed rate (evenly spaced);
`Load.burst(n, tag=...)` keeps `n` streams of a named group open back to back until the group is
released (`release_burst`: each worker finishes its stream) or stopped (`stop_burst`). Every request becomes an `Outcome`
with its send and end times (time.monotonic()), the HTTP status, the tokens streamed and whether
the stream ended properly (`[DONE]` seen): the bench counts failures from these, so what the
gateway says about itself is not taken on trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass(slots=True)
class Outcome:
    """One request as the client saw it."""

    sent: float
    tag: str
    end: float = 0.0
    status: int = 0
    tokens: int = 0
    done: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.done and not self.error


@dataclass(slots=True)
class Load:
    """Requests to one gateway; see the module docstring."""

    url: str
    model: str
    api_key: str
    max_tokens: int = 32
    timeout_s: float = 120.0
    outcomes: list[Outcome] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _steady: asyncio.Task[None] | None = None
    _bursts: dict[str, tuple[asyncio.Event, list[asyncio.Task[None]]]] = field(default_factory=dict)

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def one(self, *, tag: str = "steady", max_tokens: int | None = None) -> Outcome:
        """Send one streaming request and follow it to its end."""
        assert self._session is not None
        out = Outcome(sent=time.monotonic(), tag=tag)
        self.outcomes.append(out)
        body = {
            "model": self.model,
            "prompt": "faults bench",
            "max_tokens": max_tokens or self.max_tokens,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            async with self._session.post(
                f"{self.url}/v1/completions", json=body, headers=headers
            ) as resp:
                out.status = resp.status
                if resp.status != 200:
                    await resp.read()
                else:
                    async for line in resp.content:
                        if line.startswith(b"data:"):
                            if b"[DONE]" in line:
                                out.done = True
                            elif b'"error"' in line:
                                out.error = "error event in stream"
                            else:
                                out.tokens += 1
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            out.error = type(exc).__name__
        out.end = time.monotonic()
        return out

    def _spawn(self, tag: str, max_tokens: int | None = None) -> None:
        task = asyncio.create_task(self._quiet(tag, max_tokens))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quiet(self, tag: str, max_tokens: int | None) -> None:
        await self.one(tag=tag, max_tokens=max_tokens)

    def steady(self, rate: float) -> None:
        """Start (or change the rate of) the steady stream of requests."""
        self.stop_steady()
        self._steady = asyncio.create_task(self._steady_loop(rate))

    def stop_steady(self) -> None:
        if self._steady is not None:
            self._steady.cancel()
            self._steady = None

    async def _steady_loop(self, rate: float) -> None:
        period = 1.0 / rate
        next_at = time.monotonic()
        while True:
            self._spawn("steady")
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def burst(self, n: int, *, max_tokens: int | None = None, tag: str = "burst") -> None:
        """Keep `n` more streams (of group `tag`) open back to back until `stop_burst(tag)`."""
        stop, workers = self._bursts.setdefault(tag, (asyncio.Event(), []))
        for _ in range(n):
            workers.append(asyncio.create_task(self._burst_worker(tag, stop, max_tokens)))

    async def _burst_worker(self, tag: str, stop: asyncio.Event, max_tokens: int | None) -> None:
        while not stop.is_set():
            out = await self.one(tag=tag, max_tokens=max_tokens)
            if not out.ok:
                await asyncio.sleep(0.2)

    def release_burst(self, tag: str = "burst") -> None:
        """Let the group's workers finish their current request and start no new one."""
        if tag in self._bursts:
            self._bursts[tag][0].set()

    async def stop_burst(self, tag: str | None = None, *, wait_s: float = 0.0) -> None:
        """Release a group (all groups if None), wait up to `wait_s`, then cancel what is left."""
        for name in [tag] if tag is not None else list(self._bursts):
            if name not in self._bursts:
                continue
            stop, workers = self._bursts.pop(name)
            stop.set()
            if workers and wait_s > 0:
                await asyncio.wait(workers, timeout=wait_s)
            for task in workers:
                task.cancel()
            for task in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def drain(self, timeout_s: float) -> None:
        """Wait for the requests in flight to end (bounded)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def close(self) -> None:
        self.stop_steady()
        await self.stop_burst()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    def between(self, start: float, end: float, *, tag: str | None = None) -> list[Outcome]:
        """Requests sent in [start, end)."""
        return [o for o in self.outcomes if start <= o.sent < end and (tag is None or o.tag == tag)]
