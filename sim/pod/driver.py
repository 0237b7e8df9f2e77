"""The live driver of one pod's engine: one asyncio task stepping `sim.engine.Engine` in real time.

Steps are chained on model time (each starts where the previous one ended), so a late wake-up
does not drift the model; only a lag beyond `RESYNC_S` re-anchors the model on the clock. After a
step's end the driver hands each request's new token to its `Stream` and wakes the handler
waiting on it; the HTTP side (`sim.pod.app`) writes the chunk and reports how late it was
against the model time (the timing error the pod benchmark measures).
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections.abc import Callable

from sim.engine import Engine

log = logging.getLogger(__name__)

RESYNC_S = 0.25


class Stream:
    """One request's view of the engine: token times as they happen, and a wake-up."""

    __slots__ = (
        "_waiter",
        "admitted_at",
        "arrival",
        "done",
        "failed",
        "first_at",
        "prompt_tokens",
        "request_id",
        "token_times",
    )

    def __init__(self, request_id: str, prompt_tokens: int, arrival: float) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.arrival = arrival
        self.token_times: list[float] = []  # model time of each token produced so far
        self.first_at: float | None = None
        self.admitted_at: float | None = None
        self.done = False
        self.failed: str | None = None  # set when the pod dies under the request
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self) -> None:
        """Return once there is something new (a token, the end, or a failure)."""
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        self._waiter = None


class Driver:
    """Owns the engine of one pod and the task that steps it."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] | None = None) -> None:
        self.engine = engine
        loop = asyncio.get_running_loop()
        self._clock = clock or loop.time
        self._streams: dict[str, Stream] = {}
        self._wake = asyncio.Event()
        self._paused = asyncio.Event()
        self._paused.set()  # set = running
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.timing_errors = array("d")  # seconds late, per token written (bounded)
        self.timing_errors_cap = 2_000_000
        self.on_admitted: Callable[[Stream, float], None] | None = None
        self.on_token: Callable[[Stream, float], None] | None = None
        self.on_finished: Callable[[Stream, float], None] | None = None

    @property
    def active(self) -> int:
        return len(self._streams)

    async def wait_idle(self) -> None:
        """Return when no request is in flight."""
        await self._idle.wait()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-pod-engine")

    async def close(self) -> None:
        """Stop stepping; every unfinished stream is failed and woken."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.fail_all("engine stopped")

    def fail_all(self, reason: str) -> None:
        for stream in self._streams.values():
            stream.failed = reason
            stream._wake()
        self._streams.clear()
        self._idle.set()

    def pause(self, paused: bool) -> None:
        """Freeze (hang fault) or resume stepping."""
        if paused:
            self._paused.clear()
        else:
            self._paused.set()

    def submit(self, request_id: str, prompt_tokens: int, max_tokens: int) -> Stream:
        """Queue a request now; raises `RequestRejected` if it can never run."""
        now = self._clock()
        self.engine.add(request_id, prompt_tokens, max_tokens, now)
        stream = Stream(request_id, prompt_tokens, now)
        self._streams[request_id] = stream
        self._idle.clear()
        self._wake.set()
        return stream

    def cancel(self, stream: Stream) -> None:
        """The client went away: drop the request from the engine."""
        if self._streams.pop(stream.request_id, None) is not None:
            self.engine.abort(stream.request_id)
            if not self._streams:
                self._idle.set()

    def record_timing_error(self, seconds: float) -> None:
        if len(self.timing_errors) < self.timing_errors_cap:
            self.timing_errors.append(seconds)

    async def _run(self) -> None:
        engine = self.engine
        clock = self._clock
        next_start: float | None = None
        while True:
            if not self._paused.is_set():
                await self._paused.wait()
                next_start = None
            if not engine.has_work:
                self._wake.clear()
                await self._wake.wait()
                next_start = None
            now = clock()
            if next_start is None or now - next_start > RESYNC_S:
                next_start = max(now, engine.busy_until)
            result = engine.step(next_start)
            if result is None:  # nothing can run yet: wait for an arrival
                self._wake.clear()
                await self._wake.wait()
                next_start = None
                continue
            delay = result.end - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            next_start = result.end
            streams = self._streams
            end = result.end
            if result.admitted and self.on_admitted is not None:
                for rid in result.admitted:
                    s = streams.get(rid)
                    if s is not None and s.admitted_at is None:
                        s.admitted_at = result.start
                        self.on_admitted(s, result.start)
            on_token = self.on_token
            on_finished = self.on_finished
            for out in result.outputs:
                s = streams.get(out.request_id)
                if s is None:
                    continue
                s.token_times.append(end)
                if out.first:
                    s.first_at = end
                if on_token is not None:
                    on_token(s, end)
                if out.finished:
                    s.done = True
                    del streams[out.request_id]
                    if on_finished is not None:
                        on_finished(s, end)
                s._wake()
            if not streams:
                self._idle.set()
