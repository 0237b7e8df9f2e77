"""The figures of one run (pure): SLO attainment, TTFT percentiles, GPU-minutes, reaction times.

Definitions, shared by the report and `surgescale bench e2e`:

- waiting(t): requests sent and without a first token yet at t (whether they sit in the gateway's
  queue or in a vLLM waiting queue: the same definition for both autoscalers);
- backlog: waiting(t) above what a system meeting the SLO holds, by Little's law
  `arrival_rate(t) * slo` (at least 1);
- reaction times, from the load step: to the first replica increase seen on the API server (the
  scale PATCH), to the first pod Ready after it, to the first node Ready after it, and to the end
  of the largest backlog episode that began after the step (the queue drained; 0 if none formed);
- SLO attainment: requests with a first token by their deadline (`RunRecord.objective()`, a
  `surgescale.slo.Slo`, the one definition of "within SLO") over all requests sent (errors and
  rejections count as misses);
- GPU-minutes: the integral of GPUs held by pods (starting or Ready) over the run; node-minutes
  the integral of Ready nodes. Both in wall-clock minutes of the (compressed) run;
- percentiles: nearest rank (`surgescale.stats.percentile`, the evaluator's definition).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sim.demo.record import ClusterSample, RunRecord
from sim.load.records import RequestResult
from sim.load.summary import served_ttfts, within_slo
from surgescale.stats import percentile

STEP_S = 0.1
"""Resolution of the derived time series."""
RATE_WINDOW_S = 2.0
"""Arrival rate window for the backlog threshold and the plots."""


def grid(duration_s: float, step: float = STEP_S) -> list[float]:
    n = max(1, math.ceil(duration_s / step) + 1)
    return [i * step for i in range(n)]


def waiting_series(requests: Sequence[RequestResult], times: Sequence[float]) -> list[int]:
    """waiting(t) for each t: sent at or before t, and first token (or end) after t."""
    starts = sorted(r.started_s for r in requests)
    ends = sorted(_wait_end(r) for r in requests)
    return [bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t) for t in times]


def _wait_end(r: RequestResult) -> float:
    if r.ttft_s is not None:
        return r.started_s + r.ttft_s
    if r.e2e_s is not None:
        return r.started_s + r.e2e_s
    return r.started_s


def arrival_rate_series(
    requests: Sequence[RequestResult], times: Sequence[float], window_s: float = RATE_WINDOW_S
) -> list[float]:
    """Requests sent per second over the trailing window, for each t."""
    starts = sorted(r.started_s for r in requests)
    return [
        (bisect.bisect_right(starts, t) - bisect.bisect_right(starts, t - window_s)) / window_s
        for t in times
    ]


def rolling_ttft(
    requests: Sequence[RequestResult], times: Sequence[float], *, window_s: float, q: float
) -> list[float | None]:
    """TTFT percentile of the requests sent in the trailing window, for each t."""
    done = sorted((r.started_s, r.ttft_s) for r in requests if r.ttft_s is not None)
    sent = [s for s, _ in done]
    out: list[float | None] = []
    for t in times:
        lo = bisect.bisect_right(sent, t - window_s)
        hi = bisect.bisect_right(sent, t)
        out.append(percentile([v for _, v in done[lo:hi]], q))
    return out


def integrate(samples: Sequence[ClusterSample], end: float, value: str) -> float:
    """Integral of a step function given by `samples` up to `end` (value-seconds)."""
    total = 0.0
    for a, b in zip(samples, [*samples[1:], None], strict=True):
        stop = end if b is None else min(b.t, end)
        if stop > a.t:
            total += float(getattr(a, value)) * (stop - a.t)
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction:
    """Seconds from the load step to each milestone; None when it did not happen."""

    patch_s: float | None
    pod_ready_s: float | None
    node_ready_s: float | None
    drain_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """The summary table row of one run."""

    name: str
    label: str
    requests: int
    ok: int
    failed: int
    slo_attainment: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    ttft_p99_s: float | None
    burst_ttft_p99_s: float | None
    gpu_minutes: float
    node_minutes: float
    max_replicas: int
    max_nodes: int
    reaction: Reaction


def backlog_end(record: RunRecord, *, after: float) -> float | None:
    """End of the largest backlog episode that began at or after `after` (None if none began).

    An episode runs while waiting(t) stays above `max(1, arrival_rate(t) * slo)`; the largest
    is the one with the highest peak, so a stray pair of requests in prefill later on does not
    count as the queue not being drained.
    """
    times = [t for t in grid(record.duration_s) if t >= after]
    if not times:
        return None
    waiting = waiting_series(record.requests, times)
    rates = arrival_rate_series(record.requests, times)
    best_peak = 0
    best_end: float | None = None
    peak = 0
    in_backlog = False
    for t, w, lam in zip(times, waiting, rates, strict=True):
        if w > max(1.0, lam * record.slo_s):
            in_backlog = True
            peak = max(peak, w)
        elif in_backlog:
            in_backlog = False
            if peak > best_peak:
                best_peak, best_end = peak, t
            peak = 0
    if in_backlog and peak > best_peak:
        best_end = record.duration_s
    return best_end


def reaction(record: RunRecord) -> Reaction:
    step = record.load_step_at
    if step is None:
        return Reaction(patch_s=None, pod_ready_s=None, node_ready_s=None, drain_s=None)
    ups = [c.t for c in record.changes if c.target == "replicas" and c.new > c.old and c.t >= step]
    patch = ups[0] if ups else None
    pod = next((t for t in sorted(record.pod_ready_at) if patch is not None and t >= patch), None)
    node = next((t for t in sorted(record.node_ready_at) if t >= step), None)
    drained = backlog_end(record, after=step)
    return Reaction(
        patch_s=None if patch is None else patch - step,
        pod_ready_s=None if pod is None else pod - step,
        node_ready_s=None if node is None else node - step,
        drain_s=0.0 if drained is None else drained - step,
    )


def summarize(record: RunRecord) -> Summary:
    """Figures of a demo run. The requests' figures are the load generator's definitions
    (`sim.load.summary.served_ttfts`, `.within_slo`); the evaluator's run is summarised by
    `sim.evaluate.metrics.summarize`."""
    reqs = record.requests
    ttfts = served_ttfts(reqs)
    within = within_slo(reqs, record.objective())
    ok = sum(1 for r in reqs if r.ok)
    burst: list[float] = []
    if record.load_step_at is not None:
        end = record.burst_end_at if record.burst_end_at is not None else record.duration_s
        burst = [
            r.ttft_s
            for r in reqs
            if r.ttft_s is not None and record.load_step_at <= r.started_s < end
        ]
    gpu_seconds = record.gpus_per_replica * (
        integrate(record.cluster, record.duration_s, "replicas_ready")
        + integrate(record.cluster, record.duration_s, "replicas_starting")
    )
    return Summary(
        name=record.name,
        label=record.label,
        requests=len(reqs),
        ok=ok,
        failed=len(reqs) - ok,
        slo_attainment=(within / len(reqs)) if reqs else 0.0,
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p95_s=percentile(ttfts, 95),
        ttft_p99_s=percentile(ttfts, 99),
        burst_ttft_p99_s=percentile(burst, 99),
        gpu_minutes=gpu_seconds / 60.0,
        node_minutes=integrate(record.cluster, record.duration_s, "nodes_ready") / 60.0,
        max_replicas=max((c.replicas_desired for c in record.cluster), default=0),
        max_nodes=max((c.nodes_desired for c in record.cluster), default=0),
        reaction=reaction(record),
    )
