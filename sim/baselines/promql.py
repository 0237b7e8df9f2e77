"""A tiny, pure Prometheus: scraped histogram samples and the one query KEDA runs on them.

The KEDA-style baseline (`sim.baselines.hpa` for the decision, `sim.baselines.keda_live` for the I/O) asks
what a real Prometheus would answer to

    histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))

at a given time, given what was scraped so far. This module reproduces the parts of Prometheus that
shape that answer:

- samples are stamped with the scrape time, one series per (pod, `le`), and a range selector
  `[w]` at time `t` sees the samples with `t - w < ts <= t`;
- `rate()` is Prometheus' extrapolated rate (`extrapolatedRate` in promql/functions.go): counter
  resets are folded in, the result is extrapolated to the window edges when the first/last samples
  are within 1.1 average intervals of them (else by half an interval), never below zero for a
  counter, and it needs at least two samples in the window;
- `histogram_quantile()` interpolates linearly inside the bucket that holds the rank, answers the
  upper bound of the last finite bucket when the rank falls into `+Inf`, and is NaN (no answer) on
  an empty histogram.

Reading a histogram out of the text exposition format is `parse_histogram` (prometheus_client's
parser, through `sim.promtext`); everything here is pure (no I/O, no clock): callers pass the
scrape time in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sim import promtext

INF = math.inf


@dataclass(frozen=True, slots=True)
class HistogramSample:
    """One scrape of one pod's histogram: cumulative bucket counts by upper bound `le`."""

    ts: float
    buckets: tuple[tuple[float, float], ...]
    """(le, cumulative count), sorted by le, ending with +Inf."""


def parse_histogram(
    text: str, name: str, labels: Mapping[str, str] | None = None
) -> dict[float, float]:
    """Cumulative bucket counts of histogram `name` in a Prometheus text exposition.

    Series whose labels do not include every `labels` pair are skipped; buckets with the same
    `le` from several matching series (e.g. two label sets) are summed, as `sum by (le)` would.
    """
    out: dict[float, float] = {}
    for found, value in promtext.samples(text, f"{name}_bucket", labels):
        try:
            le = float(found["le"])  # "+Inf" parses to inf
        except (KeyError, ValueError):
            continue
        out[le] = out.get(le, 0.0) + value
    return out


def to_sample(ts: float, buckets: Mapping[float, float]) -> HistogramSample | None:
    """A sample from parsed buckets, or None if there is no `+Inf` bucket (not a histogram)."""
    if INF not in buckets:
        return None
    return HistogramSample(ts=ts, buckets=tuple(sorted(buckets.items())))


def extrapolated_rate(
    points: Sequence[tuple[float, float]], *, start: float, end: float
) -> float | None:
    """Prometheus' `rate()` of one counter over the window (start, end]; None if < 2 samples."""
    if len(points) < 2:
        return None
    first_t, first_v = points[0]
    last_t, last_v = points[-1]
    result = last_v - first_v
    previous = first_v
    for _, v in points[1:]:
        if v < previous:  # counter reset: the counter restarted from zero
            result += previous
        previous = v
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    average_step = sampled / (len(points) - 1)
    to_start = first_t - start
    to_end = end - last_t
    if result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)
    threshold = average_step * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average_step / 2
    interval += to_end if to_end < threshold else average_step / 2
    return result * (interval / sampled) / (end - start)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' `histogram_quantile` over (le, cumulative) buckets; NaN when it has no answer."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -INF
    if q > 1:
        return INF
    ordered = sorted(buckets)
    if len(ordered) < 2 or ordered[-1][0] != INF:
        return math.nan
    # Prometheus forces monotonicity (rates from different series can make it dip).
    fixed: list[tuple[float, float]] = []
    running = 0.0
    for le, count in ordered:
        running = max(running, count)
        fixed.append((le, running))
    observations = fixed[-1][1]
    if observations <= 0 or math.isnan(observations):
        return math.nan
    rank = q * observations
    index = next(i for i, (_, c) in enumerate(fixed) if c >= rank)
    if index == len(fixed) - 1:
        return fixed[-2][0]
    if index == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    bucket_start = 0.0
    bucket_end, count = fixed[index]
    if index > 0:
        bucket_start = fixed[index - 1][0]
        count -= fixed[index - 1][1]
        rank -= fixed[index - 1][1]
    if count <= 0:
        return bucket_end
    return bucket_start + (bucket_end - bucket_start) * (rank / count)


@dataclass(slots=True)
class HistogramStore:
    """Scraped samples of one histogram, one series per target (pod), trimmed to `retention_s`."""

    retention_s: float = 600.0
    series: dict[str, list[HistogramSample]] = field(default_factory=dict)

    def add(self, target: str, sample: HistogramSample) -> None:
        samples = self.series.setdefault(target, [])
        samples.append(sample)
        cutoff = sample.ts - self.retention_s
        while samples and samples[0].ts < cutoff:
            samples.pop(0)

    def targets(self) -> Iterable[str]:
        return self.series.keys()

    def quantile_over_rate(self, q: float, *, at: float, window_s: float) -> float:
        """`histogram_quantile(q, sum by (le) (rate(<hist>_bucket[window])))` evaluated at `at`."""
        start = at - window_s
        summed: dict[float, float] = {}
        for samples in self.series.values():
            in_window = [s for s in samples if start < s.ts <= at]
            if len(in_window) < 2:
                continue
            bounds = {le for s in in_window for le, _ in s.buckets}
            for le in bounds:
                points = [(s.ts, dict(s.buckets).get(le, 0.0)) for s in in_window]
                rate = extrapolated_rate(points, start=start, end=at)
                if rate is not None:
                    summed[le] = summed.get(le, 0.0) + rate
        return histogram_quantile(q, list(summed.items()))
