"""The virtual clock and event queue the evaluator runs on.

A plain `heapq` of `(time, seq, callback, arg)`: the cheapest event queue CPython offers, and
deterministic (ties break on insertion order, never on object identity). SimPy was considered:
its generator processes cost several microseconds per event and add nothing here, because every
actor in the evaluator (arrivals, pods, the gateway, the cluster, the policies' ticks) is a
callback, and the engine model itself jumps over unchanged steps. As in SimPy, the loop is one
`step()` that a real-time driver could override to sleep until the next event (STYLE habit 5).

Cancelling is by generation counter: an actor that reschedules bumps its own counter and ignores
stale callbacks, so the queue never needs a delete.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Callback = Callable[[Any], None]


class Clock:
    """Virtual time in seconds and the queue of what happens next."""

    __slots__ = ("_queue", "_seq", "events", "now")

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._queue: list[tuple[float, int, Callback, Any]] = []
        self._seq = 0
        self.events = 0
        """Number of callbacks run so far (for the speed figures)."""

    def at(self, when: float, callback: Callback, arg: Any = None) -> None:
        """Run `callback(arg)` at virtual time `when` (never earlier than now)."""
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, callback, arg))

    def after(self, delay: float, callback: Callback, arg: Any = None) -> None:
        """Run `callback(arg)` `delay` seconds from now."""
        self.at(self.now + max(delay, 0.0), callback, arg)

    def every(self, period: float, callback: Callback, *, first: float | None = None) -> None:
        """Run `callback(None)` every `period` seconds, first at `first` (default: now + period)."""

        def tick(_: Any) -> None:
            callback(None)
            self.after(period, tick)

        self.at(self.now + period if first is None else first, tick)

    def peek(self) -> float | None:
        """Time of the next event, or None when the queue is empty."""
        return self._queue[0][0] if self._queue else None

    def step(self) -> None:
        """Advance to the next event and run it."""
        when, _, callback, arg = heapq.heappop(self._queue)
        self.now = when
        self.events += 1
        callback(arg)

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to `until` (inclusive), or until `stop()` says so between events."""
        queue = self._queue
        while queue and queue[0][0] <= until:
            self.step()
            if stop is not None and stop():
                return
        self.now = max(self.now, until)
