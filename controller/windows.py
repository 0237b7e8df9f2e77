"""Sliding-window statistics with a caller-supplied `now`: counts/rates, means and quantiles.

Each window is a ring of fixed-width time buckets, so adding a sample is O(1) and old samples
leave by whole buckets. Quantiles use DDSketch (relative-error streaming quantiles) per bucket,
merged on query. Nothing here reads a clock; `controller.state` passes its own time in.
"""

from __future__ import annotations

import math
from collections import deque

from ddsketch import DDSketch


class RateWindow:
    """Events per second over the last `window_s` seconds, counted in buckets of `bucket_s`."""

    __slots__ = ("_buckets", "_total", "bucket_s", "window_s")

    def __init__(self, window_s: float, bucket_s: float = 0.1) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._buckets: deque[list[int]] = deque()  # [bucket index, count]
        self._total = 0

    def add(self, now: float, n: int = 1) -> None:
        index = int(now / self.bucket_s)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= index:
            buckets[-1][1] += n
        else:
            buckets.append([index, n])
        self._total += n

    def _expire(self, now: float) -> None:
        oldest = int((now - self.window_s) / self.bucket_s)
        buckets = self._buckets
        while buckets and buckets[0][0] <= oldest:
            self._total -= buckets.popleft()[1]

    def count(self, now: float) -> int:
        self._expire(now)
        return self._total

    def rate(self, now: float) -> float:
        """Per-second rate over the whole window (so a fresh window ramps up rather than
        reading a first burst as a huge rate; the policy's queue term covers the backlog)."""
        self._expire(now)
        return self._total / self.window_s


class MeanWindow:
    """Mean of samples over the last `window_s` seconds (buckets of `bucket_s`)."""

    __slots__ = ("_buckets", "_count", "_sum", "bucket_s", "window_s")

    def __init__(self, window_s: float, bucket_s: float = 1.0) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._buckets: deque[list[float]] = deque()  # [index, sum, count]
        self._sum = 0.0
        self._count = 0

    def add(self, now: float, value: float) -> None:
        index = int(now / self.bucket_s)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= index:
            buckets[-1][1] += value
            buckets[-1][2] += 1
        else:
            buckets.append([index, value, 1])
        self._sum += value
        self._count += 1

    def mean(self, now: float) -> float | None:
        oldest = int((now - self.window_s) / self.bucket_s)
        buckets = self._buckets
        while buckets and buckets[0][0] <= oldest:
            _, s, c = buckets.popleft()
            self._sum -= s
            self._count -= int(c)
        if self._count <= 0:
            self._sum = 0.0
            return None
        return self._sum / self._count


class QuantileWindow:
    """Quantiles of samples over the last `window_s` seconds: one DDSketch per bucket."""

    __slots__ = ("_buckets", "_cache", "bucket_s", "relative_accuracy", "window_s")

    def __init__(
        self, window_s: float, bucket_s: float = 5.0, relative_accuracy: float = 0.01
    ) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self.relative_accuracy = relative_accuracy
        self._buckets: deque[tuple[int, DDSketch]] = deque()
        self._cache: dict[float, float | None] = {}

    def add(self, now: float, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            return
        index = int(now / self.bucket_s)
        buckets = self._buckets
        if not buckets or buckets[-1][0] < index:
            buckets.append((index, DDSketch(self.relative_accuracy)))
        buckets[-1][1].add(value)
        self._cache.clear()

    def quantile(self, now: float, q: float) -> float | None:
        """The q-quantile of the window, or None with no samples."""
        oldest = int((now - self.window_s) / self.bucket_s)
        buckets = self._buckets
        expired = False
        while buckets and buckets[0][0] <= oldest:
            buckets.popleft()
            expired = True
        if expired:
            self._cache.clear()
        if q in self._cache:
            return self._cache[q]
        if not buckets:
            return None
        merged = DDSketch(self.relative_accuracy)
        for _, sketch in buckets:
            merged.merge(sketch)
        value = merged.get_quantile_value(q)
        result = None if value is None else float(value)
        self._cache[q] = result
        return result
