"""The project's one percentile: what "TTFT p95" or "latency p99" means in every report.

Nearest rank: the p-th percentile of n values is the smallest value that at least p% of the
values are at or below, i.e. the value at 1-based rank ceil(p/100 * n) of the sorted values
(rank 1 for p = 0). It is always one of the observed values (never an interpolation between
two), so "p99 <= SLO" reads as "at least 99% of the requests met the SLO". The rank is computed
as ceil(q * n / 100), so that e.g. p99.9 of 1000 values is the 999th (q / 100 * n rounds up to
999.0000000000001).

Its users: the evaluator's summary, series and cross-check (`sim.evaluate.metrics`,
`sim.evaluate.runner`, `sim.crosscheck`; a never-served request counts as +inf there and a rank
that falls on one has no value), the load generator's summary (`sim.load.summary`), the demo's
summary, report and live view (`sim.demo.summary`, `sim.demo.live`), the pod's timing error
(`sim.pod.app.timing_summary`, read by `surgescale bench pod`), `surgescale bench cluster`
(`sim.cluster.bench`), `surgescale bench events` (`sim.benches.events`) and `surgescale bench
gateway` (`sim.benches.gateway`). `controller.concurrency` takes the same rank inline on bins it
has already sorted (per TPOT sample, where sorting twice shows in the evaluator's time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank `q`-th percentile (q in 0..100) of `values`; None when there are none."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in 0..100, got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered) / 100.0))
    return ordered[rank - 1]
