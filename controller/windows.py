"""Sliding-window statistics with a caller-supplied `now`: counts/rates, means and quantiles.

Each window is a ring of fixed-width time buckets, so adding a sample is O(1) and old samples
leave by whole buckets. Quantiles use DDSketch (relative-error streaming quantiles; `controller.sketch`) per bucket,
merged on query (at most every `refresh_s`), with weighted sampling past a per-bucket count so
the cost per event stays flat at high rates. Nothing here reads a clock; `controller.state` passes its own time in.

Samples are timed by the caller (the events' own time, see `controller.state`), so they may come
out of order: a sample older than the newest bucket goes into the bucket of its time (found from
the newest end, where late samples almost always land); one older than the window is dropped at
the next query, as if it had expired there.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from controller.sketch import Sketch, merged_quantile

_B = TypeVar("_B", bound=Any)


def _bucket(buckets: deque[_B], index: int, make: Callable[[int], _B]) -> _B:
    """The bucket of `index` in a deque ordered by index, inserted in order if missing."""
    if not buckets or buckets[-1][0] < index:
        bucket = make(index)
        buckets.append(bucket)
        return bucket
    if buckets[-1][0] == index:
        return buckets[-1]
    pos = len(buckets) - 1
    while pos >= 0 and buckets[pos][0] > index:
        pos -= 1
    if pos >= 0 and buckets[pos][0] == index:
        return buckets[pos]
    bucket = make(index)
    buckets.insert(pos + 1, bucket)
    return bucket


def _position(
    indices: deque[int], index: int, columns: tuple[tuple[deque[Any], float], ...]
) -> int:
    """The position of bucket `index` in `indices` (ordered), inserted in order if missing, with
    a zero (of the type of the column's first value, or 0) in each of `columns` beside it.

    The counting windows keep their buckets as parallel deques of numbers rather than one small
    list per bucket: a deque of ints and floats is one object for the garbage collector,
    whatever the number of buckets (a 0.1 s rate window over 60 s held 600 lists, and each
    lived long enough to be promoted and walked by full collections)."""
    if not indices or indices[-1] < index:
        indices.append(index)
        for column, zero in columns:
            column.append(zero)
        return len(indices) - 1
    pos = len(indices) - 1
    while pos >= 0 and indices[pos] > index:
        pos -= 1
    if pos >= 0 and indices[pos] == index:
        return pos
    indices.insert(pos + 1, index)
    for column, zero in columns:
        column.insert(pos + 1, zero)
    return pos + 1


class RateWindow:
    """Events per second over the last `window_s` seconds, counted in buckets of `bucket_s`."""

    __slots__ = ("_counts", "_indices", "_total", "bucket_s", "window_s")

    def __init__(self, window_s: float, bucket_s: float = 0.1) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._indices: deque[int] = deque()  # bucket index, ascending
        self._counts: deque[int] = deque()  # its count
        self._total = 0

    def add(self, now: float, n: int = 1) -> None:
        """Count `n` events that happened at `now` (which may be earlier than the last add)."""
        index = int(now / self.bucket_s)
        indices = self._indices
        if indices and indices[-1] == index:
            self._counts[-1] += n
        else:
            self._counts[_position(indices, index, ((self._counts, 0),))] += n
        self._total += n

    def _expire(self, now: float) -> None:
        oldest = int((now - self.window_s) / self.bucket_s)
        indices = self._indices
        while indices and indices[0] <= oldest:
            indices.popleft()
            self._total -= self._counts.popleft()

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

    __slots__ = ("_count", "_counts", "_indices", "_sum", "_sums", "bucket_s", "window_s")

    def __init__(self, window_s: float, bucket_s: float = 1.0) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._indices: deque[int] = deque()
        self._sums: deque[float] = deque()
        self._counts: deque[int] = deque()
        self._sum = 0.0
        self._count = 0

    def add(self, now: float, value: float) -> None:
        pos = _position(
            self._indices, int(now / self.bucket_s), ((self._sums, 0.0), (self._counts, 0))
        )
        self._sums[pos] += value
        self._counts[pos] += 1
        self._sum += value
        self._count += 1

    def mean(self, now: float) -> float | None:
        oldest = int((now - self.window_s) / self.bucket_s)
        indices = self._indices
        while indices and indices[0] <= oldest:
            indices.popleft()
            self._sum -= self._sums.popleft()
            self._count -= self._counts.popleft()
        if self._count <= 0:
            self._sum = 0.0
            return None
        return self._sum / self._count


class RatioWindow:
    """Sum of numerators over sum of denominators of the last `window_s` seconds.

    For rates measured over selected intervals only (e.g. completions per replica-second while
    the replicas are full): each `add` is one interval's (count, exposure).
    """

    __slots__ = ("_den", "_dens", "_indices", "_num", "_nums", "bucket_s", "window_s")

    def __init__(self, window_s: float, bucket_s: float = 5.0) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._indices: deque[int] = deque()
        self._nums: deque[float] = deque()
        self._dens: deque[float] = deque()
        self._num = 0.0
        self._den = 0.0

    def add(self, now: float, numerator: float, denominator: float) -> None:
        pos = _position(
            self._indices, int(now / self.bucket_s), ((self._nums, 0.0), (self._dens, 0.0))
        )
        self._nums[pos] += numerator
        self._dens[pos] += denominator
        self._num += numerator
        self._den += denominator

    def totals(self, now: float) -> tuple[float, float]:
        """(numerator sum, denominator sum) over the window."""
        oldest = int((now - self.window_s) / self.bucket_s)
        indices = self._indices
        while indices and indices[0] <= oldest:
            indices.popleft()
            self._num -= self._nums.popleft()
            self._den -= self._dens.popleft()
        if not indices:
            self._num = self._den = 0.0
        return self._num, self._den

    def ratio(self, now: float, min_denominator: float = 0.0) -> float | None:
        """The ratio, or None while the window holds less than `min_denominator` exposure."""
        num, den = self.totals(now)
        if den <= 0 or den < min_denominator:
            return None
        return num / den


class QuantileWindow:
    """Quantiles of samples over the last `window_s` seconds: one DDSketch per bucket."""

    __slots__ = (
        "_buckets",
        "_cache",
        "_closed",
        "_closed_key",
        "_seen",
        "bucket_s",
        "full_rate_samples",
        "refresh_s",
        "relative_accuracy",
        "window_s",
    )

    def __init__(
        self,
        window_s: float,
        bucket_s: float = 5.0,
        relative_accuracy: float = 0.01,
        full_rate_samples: int = 512,
        refresh_s: float = 0.5,
    ) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self.relative_accuracy = relative_accuracy
        self._buckets: deque[tuple[int, Sketch]] = deque()
        self._cache: dict[float, tuple[float, float | None]] = {}
        """q -> (computed at, value)."""
        self._seen = 0
        self.refresh_s = refresh_s
        self.full_rate_samples = full_rate_samples
        self._closed: Sketch | None = None
        """The merge of every bucket but the newest, kept while those buckets stay the same."""
        self._closed_key: tuple[int, int] | None = None

    def add(self, now: float, value: float) -> None:
        self.add_many(now, [value])

    def add_many(self, now: float, values: list[float]) -> None:
        """Add samples taken at `now`. Past `full_rate_samples` (n) in one bucket, every k-th
        sample is kept with weight k, k doubling with each doubling of the count (so each
        doubling keeps n/2 samples): the cost grows with the log of the rate, and the weights
        keep the quantiles unbiased."""
        index = int(now / self.bucket_s)
        buckets = self._buckets
        if buckets and buckets[-1][0] > index:
            # Late samples (an older bucket): kept at full weight; the merge of the closed
            # buckets is stale now.
            late = _bucket(buckets, index, lambda i: (i, Sketch(self.relative_accuracy)))[1]
            for value in values:
                if value >= 0 and math.isfinite(value):
                    late.add(value)
            self._closed = None
            self._cache.clear()
            return
        if not buckets or buckets[-1][0] < index:
            buckets.append((index, Sketch(self.relative_accuracy)))
            self._seen = 0
        sketch = buckets[-1][1]
        seen = self._seen
        limit = self.full_rate_samples
        for value in values:
            seen += 1
            if seen <= limit:
                weight = 1
            else:  # each doubling of the count keeps limit/2 samples, weighted to match
                weight = 1 << ((seen - 1) // limit).bit_length()
                if seen % weight:
                    continue
            if value >= 0 and math.isfinite(value):
                sketch.add(value, weight)
        self._seen = seen

    def quantile(self, now: float, q: float) -> float | None:
        """The q-quantile of the window, or None with no samples. Recomputed (a merge of the
        buckets' sketches) at most every `refresh_s` while samples keep arriving."""
        oldest = int((now - self.window_s) / self.bucket_s)
        buckets = self._buckets
        expired = False
        while buckets and buckets[0][0] <= oldest:
            buckets.popleft()
            expired = True
        if not buckets:
            self._cache.clear()
            return None
        cached = self._cache.get(q)
        if cached is not None and not expired and now - cached[0] < self.refresh_s:
            return cached[1]
        # Merging sketches only adds bin counts, so the closed buckets are merged once and
        # reused until one expires or a new bucket opens: a refresh then merges two sketches.
        key = (buckets[0][0], buckets[-1][0])
        if self._closed is None or self._closed_key != key:
            closed = Sketch(self.relative_accuracy)
            for index, sketch in buckets:
                if index != key[1]:
                    closed.merge(sketch)
            self._closed, self._closed_key = closed, key
        value = merged_quantile(self._closed, buckets[-1][1], q)
        result = None if value is None else float(value)
        self._cache[q] = (now, result)
        return result
