"""The live driver of one pod's engine: one asyncio task stepping `sim.engine.Engine` in real time.

Steps are chained on model time (each starts where the previous one ended), so a late wake-up
does not drift the model; only a lag beyond `RESYNC_S` re-anchors the model on the clock.

Delivery is the hot path (one pod may stream to thousands of clients): the engine decides a
step's outputs when the step is planned, so the driver writes them itself, synchronously, through
each stream's `sink` (set by the HTTP handler: it frames and writes the SSE chunk to the socket),
instead of waking one handler task per token. Writing N chunks takes time and a sleep ends late
(timer granularity, waiting for the CPU), so the driver aims its wake-up at the step's model end
minus half the expected fan-out minus the measured wake-up lateness (in all at most `MAX_LEAD_S`
and half the step): the written-minus-model timing error is centred on zero. Handlers are woken only at the end of their request (or on failure); a
streaming handler writes the tokens made before its sink was in place when it installs it. Every write's error is kept for `/admin/stats`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Callable

from sim.engine import Engine, TokenOutput

log = logging.getLogger(__name__)

RESYNC_S = 0.25
MAX_LEAD_S = 0.005  # never write a token more than this before its model time
Sink = Callable[[int, float], bool]  # (token index, model time) -> False if the client is gone


class Stream:
    """One request's view of the engine."""

    __slots__ = (
        "_waiter",
        "admitted_at",
        "arrival",
        "done",
        "failed",
        "first_at",
        "last_at",
        "prompt_tokens",
        "request_id",
        "sink",
        "tokens",
    )

    def __init__(self, request_id: str, prompt_tokens: int, arrival: float) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.arrival = arrival
        self.tokens = 0  # tokens produced so far
        self.first_at: float | None = None  # model time of the first token
        self.last_at: float | None = None  # model time of the latest token
        self.admitted_at: float | None = None
        self.done = False
        self.failed: str | None = None  # set when the pod dies under the request
        self.sink: Sink | None = None
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self) -> None:
        """Return once the request has ended (done or failed)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class Driver:
    """Owns the engine of one pod and the task that steps it."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] | None = None) -> None:
        self.engine = engine
        # time.monotonic is what asyncio's loop.time() reads; uvloop's loop.time() has 1 ms steps
        self.clock = clock or time.monotonic
        self._streams: dict[str, Stream] = {}
        self._wake = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()  # cleared = hung
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._per_token_s = 5e-6  # fan-out cost per token (EWMA), for centring
        self._wake_late_s = 0.0  # how late sleeps end (timer granularity, run-queue wait; EWMA)
        self.timing_errors = array("d")  # written - model time, seconds, recent tokens
        self.timing_errors_cap = 500_000  # 4 MB per pod; the older half goes when full
        self.on_admitted: Callable[[Stream, float], None] | None = None
        self.on_first_token: Callable[[Stream, float], None] | None = None
        self.on_itl: Callable[[float, int], None] | None = None  # (gap, how many tokens)
        self.on_finished: Callable[[Stream, float], None] | None = None

    @property
    def active(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-pod-engine")

    async def wait_idle(self) -> None:
        """Return when no request is in flight."""
        await self._idle.wait()

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
            stream.wake()
        self._streams.clear()
        self._idle.set()

    def pause(self, paused: bool) -> None:
        """Freeze (hang fault) or resume stepping."""
        if paused:
            self._running.clear()
        else:
            self._running.set()

    def submit(self, request_id: str, prompt_tokens: int, max_tokens: int) -> Stream:
        """Queue a request now; raises `RequestRejected` if it can never run."""
        now = self.clock()
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
        errors = self.timing_errors
        if len(errors) >= self.timing_errors_cap:
            del errors[: len(errors) // 2]
        errors.append(seconds)

    async def _run(self) -> None:
        engine = self.engine
        clock = self.clock
        next_start: float | None = None
        while True:
            if not self._running.is_set():
                await self._running.wait()
                next_start = None
            if not engine.has_work:
                self._wake.clear()
                await self._wake.wait()
                next_start = None
            now = clock()
            if next_start is None or now - next_start > RESYNC_S:
                next_start = max(now, engine.busy_until)
            result = engine.step(next_start)
            if result is None and now > next_start:
                # Requests that arrived after the previous step's model end (a late wake-up)
                # can run from now on.
                next_start = now
                result = engine.step(next_start)
            if result is None:  # nothing can run yet: wait for an arrival
                self._wake.clear()
                await self._wake.wait()
                next_start = None
                continue
            lead = self._per_token_s * len(result.outputs) / 2 + self._wake_late_s
            lead = min(lead, result.duration / 2, MAX_LEAD_S)
            target = result.end - lead
            delay = target - clock()
            if delay > 0:
                await asyncio.sleep(delay)
                late = clock() - target
                self._wake_late_s += 0.1 * (min(max(late, 0.0), MAX_LEAD_S) - self._wake_late_s)
            next_start = result.end
            began = clock()
            self._deliver(result.start, result.end, result.admitted, result.outputs)
            if result.outputs:
                per = (clock() - began) / len(result.outputs)
                self._per_token_s += 0.2 * (per - self._per_token_s)

    def _deliver(
        self,
        start: float,
        end: float,
        admitted: tuple[str, ...],
        outputs: tuple[TokenOutput, ...],
    ) -> None:
        streams = self._streams
        if admitted and self.on_admitted is not None:
            for rid in admitted:
                s = streams.get(rid)
                if s is not None and s.admitted_at is None:
                    s.admitted_at = start
                    self.on_admitted(s, start)
        gaps: dict[float, int] = {}
        on_first = self.on_first_token
        get = streams.get
        for rid, total, _first, finished in outputs:
            s = get(rid)
            if s is None:
                continue
            last = s.last_at
            if last is None:
                s.first_at = end
                if on_first is not None:
                    on_first(s, end)
            else:
                gap = end - last
                gaps[gap] = gaps.get(gap, 0) + 1
            s.last_at = end
            s.tokens = total
            sink = s.sink
            if sink is not None and not sink(total - 1, end):
                self.cancel(s)
                s.failed = "client gone"
                s.wake()
                continue
            if finished:
                s.done = True
                streams.pop(rid, None)
                if self.on_finished is not None:
                    self.on_finished(s, end)
                s.wake()
        if gaps and self.on_itl is not None:
            for gap, n in gaps.items():
                self.on_itl(gap, n)
        if not streams:
            self._idle.set()
