"""The arrival rate's trend: a least-squares line through recent per-bucket arrival rates.

Pure (no I/O, no clock: every call takes its time). `controller.state` feeds it the arrivals and
puts the slope and its standard error in the policy's `Observation`; `controller.policy` sizes
the nodes it buys for the rate one reacquire time ahead (`rate + slope * lead`), using only the
part of the slope that is certain (`slope - z * standard error`, never below 0).

Why: a new GPU node serves only a node boot plus a cold start (4 minutes for a 70B model) after
it is asked for. On a load that climbs steadily (the conv trace at 4x goes from 20 to 31 req/s in
three minutes) a policy sized for today's rate is always one reacquire time behind, and with
replicas near their TPOT limit every request in between misses. The standard error comes from
the residuals of the fit, not from a Poisson assumption: on bursty load (the code trace, where
requests arrive in batches) the residuals are large, the slope is not certain, and no headroom
is added; on a smooth ramp it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_S = 300.0
BUCKET_S = 10.0
MIN_BUCKETS = 6


@dataclass(frozen=True, slots=True)
class Trend:
    """A fitted trend: `slope` (req/s per second) and its standard error."""

    slope: float
    stderr: float

    def certain(self, z: float) -> float:
        """The slope less `z` standard errors, never below 0."""
        return max(self.slope - max(z, 0.0) * self.stderr, 0.0)


class ArrivalTrend:
    """Arrival counts per `bucket_s` over the last `window_s` seconds."""

    __slots__ = ("_cache", "_counts", "_origin", "bucket_s", "min_buckets", "window_s")

    def __init__(
        self,
        window_s: float = WINDOW_S,
        bucket_s: float = BUCKET_S,
        min_buckets: int = MIN_BUCKETS,
    ) -> None:
        self.window_s = window_s
        self.bucket_s = max(bucket_s, 1e-3)
        self.min_buckets = max(min_buckets, 3)
        self._counts: dict[int, float] = {}
        self._cache: tuple[int, Trend | None] | None = None
        self._origin: int | None = None
        """The first bucket that ever had an arrival: partly before the arrivals (or this
        controller) started, so it is left out of the fit."""

    def add(self, at: float, count: int = 1) -> None:
        """`count` arrivals at time `at`."""
        index = int(at // self.bucket_s)
        if self._origin is None or index < self._origin:
            self._origin = index
        self._counts[index] = self._counts.get(index, 0.0) + count
        if self._cache is not None and index < self._cache[0]:
            self._cache = None  # a late arrival in a bucket already fitted

    def estimate(self, now: float) -> Trend | None:
        """The trend over the complete buckets of the window before `now` (from the bucket after
        the first one ever seen); None with fewer than `min_buckets` of them. A bucket without
        arrivals is a rate of 0."""
        current = int(now // self.bucket_s)
        if self._cache is not None and self._cache[0] == current:
            return self._cache[1]
        first = current - int(self.window_s // self.bucket_s)
        counts = self._counts
        for index in [i for i in counts if i < first]:
            del counts[index]
        trend = None
        if counts and self._origin is not None:
            start = max(first, self._origin + 1)
            n = current - start
            if n >= self.min_buckets:
                xs = [(i + 0.5) * self.bucket_s for i in range(start, current)]
                ys = [counts.get(i, 0.0) / self.bucket_s for i in range(start, current)]
                mx = sum(xs) / n
                my = sum(ys) / n
                sxx = sum((x - mx) ** 2 for x in xs)
                sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
                syy = sum((y - my) ** 2 for y in ys)
                slope = sxy / sxx
                residual = max(syy - slope * sxy, 0.0) / (n - 2)
                trend = Trend(slope=slope, stderr=math.sqrt(residual / sxx))
        self._cache = (current, trend)
        return trend
