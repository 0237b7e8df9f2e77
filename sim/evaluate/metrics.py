"""The figures of one run: latency percentiles, SLO attainment, GPU and node hours, reactions.

Definitions (the same for every policy):

- TTFT is from arrival at the gateway (or the Service) to the first token; a request that never
  got one counts as +inf (a miss) in every percentile and in the attainment;
- SLO attainment: the share of requests with TTFT <= the SLO;
- TPOT: (finish - first token) / (output tokens - 1), for requests with more than one token;
- GPU-hours: GPUs held by pods from binding (model load included) to termination (drain
  included); node-hours: nodes from launch (boot included) to termination; both over the run
  (to the last completion, at least `tail_s` past the last arrival);
- scale events: changes of the Deployment's replica count;
- bursts: the three largest rises of the arrival rate (10 s windows against the 60 s before,
  at least doubling, 300 s apart); the reaction to one is the time from its onset to the
  policy's first replica increase after it (None when there was none within 300 s). Percentiles
  are nearest-rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sim.evaluate.trace import TraceRequest
from sim.evaluate.world import RunResult

REACTION_CAP_S = 300.0


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (q in 0..100); None for no values or +inf."""
    if not sorted_values:
        return None
    rank = max(math.ceil(q / 100.0 * len(sorted_values)) - 1, 0)
    value = sorted_values[min(rank, len(sorted_values) - 1)]
    return None if math.isinf(value) else value


@dataclass(frozen=True, slots=True)
class Burst:
    onset_s: float
    rate_before: float
    rate_after: float


def find_bursts(
    requests: Sequence[TraceRequest], *, count: int = 3, window_s: float = 10.0
) -> list[Burst]:
    """The largest rises of the arrival rate in the trace (see the module docstring)."""
    if not requests:
        return []
    arrivals = [r.arrival_s for r in requests]
    end = arrivals[-1]
    step = window_s / 2
    n = int(end // step) + 1
    counts = [0] * (n + 1)
    for t in arrivals:
        counts[int(t // step)] += 1
    candidates: list[Burst] = []
    per_window = round(window_s / step)
    before_windows = round(60.0 / step)
    for i in range(n):
        after = sum(counts[i : i + per_window]) / window_s
        lo = max(i - before_windows, 0)
        span = (i - lo) * step
        before = sum(counts[lo:i]) / span if span > 0 else 0.0
        if after >= 2 * before and after - before > 0:
            candidates.append(Burst(i * step, before, after))
    candidates.sort(key=lambda b: b.rate_after - b.rate_before, reverse=True)
    chosen: list[Burst] = []
    for c in candidates:
        if all(abs(c.onset_s - k.onset_s) >= REACTION_CAP_S for k in chosen):
            chosen.append(c)
        if len(chosen) == count:
            break
    return sorted(chosen, key=lambda b: b.onset_s)


def reactions(result: RunResult, bursts: Sequence[Burst]) -> list[float | None]:
    """Seconds from each burst's onset to the first replica increase after it."""
    out: list[float | None] = []
    changes = result.replica_changes
    for burst in bursts:
        previous = None
        found: float | None = None
        for t, replicas in changes:
            if t < burst.onset_s:
                previous = replicas
                continue
            if previous is not None and replicas > previous and t - burst.onset_s <= REACTION_CAP_S:
                found = t - burst.onset_s
                break
            previous = replicas
        out.append(found)
    return out


def summarize(
    result: RunResult, bursts: Sequence[Burst], *, reactive: bool = True
) -> dict[str, Any]:
    """One policy's row: the keys of `summary.json`. Clairvoyant policies (`reactive=False`)
    act before a burst, so they get no reaction times."""
    sc = result.scenario
    slo = sc.slo_ttft_s
    ttfts = sorted(math.inf if r.ttft is None else r.ttft for r in result.requests)
    tpots = sorted(t for t in (r.tpot for r in result.requests) if t is not None)
    total = len(sc.requests)
    met = sum(1 for t in ttfts if t <= slo)
    completed = sum(1 for r in result.requests if r.finish is not None)
    rejected = sum(1 for r in result.requests if r.finish is not None and r.first_token is None)
    react = reactions(result, bursts) if reactive else [None for _ in bursts]
    reacted = [r for r in react if r is not None]
    desired = [s.desired for s in result.samples]
    ready = [s.ready for s in result.samples]
    sim_s = result.end_s
    return {
        "policy": result.policy,
        "scenario": sc.name,
        "requests": total,
        "completed": completed,
        "rejected": rejected,
        "slo_ttft_s": slo,
        "slo_attainment": met / total if total else 1.0,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "ttft_p99_s": percentile(ttfts, 99),
        "tpot_p95_s": percentile(tpots, 95),
        "gpu_hours": result.gpu_seconds / 3600.0,
        "node_hours": result.node_seconds / 3600.0,
        "scale_events": result.scale_events,
        "reaction_s": sum(reacted) / len(reacted) if reacted else None,
        "reactions_s": react,
        "initial_replicas": sc.initial_replicas,
        "peak_replicas": max(desired, default=0),
        "mean_ready_replicas": sum(ready) / len(ready) if ready else 0.0,
        "sim_s": sim_s,
        "wall_s": result.wall_s,
        "speedup_x": sim_s / result.wall_s if result.wall_s > 0 else None,
        "events": result.events,
        **result.notes,
    }
