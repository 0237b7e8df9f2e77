"""The simulated cluster's clock: simulated seconds that run `speed` times faster than the wall.

Every lifecycle delay (node boot, model load, Karpenter batching windows, consolidateAfter, pod
termination grace) is expressed in simulated seconds and waited through this clock, so tests run
the same scenarios with a fast clock. Timestamps written into objects stay wall-clock UTC (what
clients expect); only durations are scaled.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable


class SimClock:
    """Simulated time derived from the event loop's monotonic clock, scaled by `speed`."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._origin: float | None = None

    def _loop_time(self) -> float:
        t = asyncio.get_running_loop().time()
        if self._origin is None:
            self._origin = t
        return t

    def now(self) -> float:
        """Simulated seconds since the clock was first read."""
        t = self._loop_time()
        assert self._origin is not None
        return (t - self._origin) * self.speed

    def wall(self, sim_seconds: float) -> float:
        """The wall-clock duration of `sim_seconds` of simulated time."""
        return max(0.0, sim_seconds) / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        """Wait `sim_seconds` of simulated time."""
        await asyncio.sleep(self.wall(sim_seconds))

    def call_later(self, sim_seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Run `callback` after `sim_seconds` of simulated time."""
        return asyncio.get_running_loop().call_later(self.wall(sim_seconds), callback)


_last_stamp: tuple[int, str] = (0, "")


def timestamp(now: dt.datetime | None = None) -> str:
    """An RFC 3339 UTC timestamp with second precision, as Kubernetes writes them."""
    global _last_stamp
    if now is not None:
        return now.strftime("%Y-%m-%dT%H:%M:%SZ")
    second = int(time.time())
    if _last_stamp[0] != second:  # formatting is the cost; one string per second is enough
        moment = dt.datetime.fromtimestamp(second, dt.UTC)
        _last_stamp = (second, moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _last_stamp[1]


def micro_timestamp() -> str:
    """An RFC 3339 UTC timestamp with microseconds (Lease renewTime, Event eventTime)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: str) -> dt.datetime:
    """Parse a Kubernetes timestamp (seconds or fractional)."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
