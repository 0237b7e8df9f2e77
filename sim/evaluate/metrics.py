"""The figures of one run: latency percentiles, SLO attainment, GPU and node hours, reactions.

Definitions (the same for every policy):

- TTFT is from arrival at the gateway (or the Service) to the first token; a request that never
  got one counts as +inf (a miss) in every percentile and in the attainment;
- TPOT: (finish - first token) / (output tokens - 1), for requests with more than one token;
- SLO attainment (`slo_attainment`): the share of requests within SLO as `surgescale.slo.Slo.met`
  defines it — first token by the request's deadline (base + per-input-token allowance) and,
  where a TPOT objective is set, TPOT within it; `ttft_attainment` counts the deadline alone,
  `tpot_attainment` the TPOT objective alone (a request never served misses both);
- billed GPU-hours (`billed_gpu_hours`, the cost every judgement uses): node-hours x GPUs per
  node, what a node-billed cloud charges; node-hours: nodes from launch (boot included) to
  termination; pod GPU-hours (`gpu_hours`, second): GPUs held by pods from binding (model load
  included) to termination (drain included); all over the run (to the last completion, at least
  `tail_s` past the last arrival);
- scale events: changes of the Deployment's replica count;
- bursts: the three largest rises of the arrival rate (10 s windows against the 60 s before,
  at least doubling, 300 s apart); the reaction to one is the time from its onset to the
  policy's first replica increase after it (None when there was none within 300 s);
- percentiles: nearest rank, `surgescale.stats.percentile` (the one definition every report,
  summary, live view and benchmark uses).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sim.evaluate.ingress import Request
from sim.evaluate.trace import TraceRequest
from sim.evaluate.world import RunResult
from surgescale.slo import Slo
from surgescale.stats import percentile

REACTION_CAP_S = 300.0


def served_percentile(latencies: Iterable[float], q: float) -> float | None:
    """`surgescale.stats.percentile` (nearest rank) of latencies in which +inf stands for a
    request never served: None when there are none or when the rank falls on such a request."""
    value = percentile(latencies, q)
    return None if value is None or math.isinf(value) else value


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


def attainment_counts(requests: Iterable[Request], slo: Slo) -> tuple[int, int, int]:
    """(within SLO, TTFT deadline met, TPOT met) over `requests`; never served misses all."""
    met = ttft_met = tpot_met = 0
    for r in requests:
        ttft = r.ttft
        if ttft is None:
            continue
        t_ok = slo.ttft_met(ttft, r.prompt_tokens)
        p_ok = slo.tpot_met(r.tpot)
        ttft_met += t_ok
        tpot_met += p_ok
        met += t_ok and p_ok
    return met, ttft_met, tpot_met


def summarize(
    result: RunResult, bursts: Sequence[Burst], *, reactive: bool = True
) -> dict[str, Any]:
    """One policy's row: the keys of `summary.json` (the summary of an evaluator run; a load
    generator run is `sim.load.summary.summarize`, a demo run `sim.demo.summary.summarize`).
    Clairvoyant policies (`reactive=False`) act before a burst, so they get no reaction times."""
    sc = result.scenario
    slo = sc.slo
    ttfts = [math.inf if r.ttft is None else r.ttft for r in result.requests]
    tpots = [t for t in (r.tpot for r in result.requests) if t is not None]
    total = len(sc.requests)
    met, ttft_met, tpot_met = attainment_counts(result.requests, slo)
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
        "slo_ttft_s": slo.ttft_base_s,
        "slo_ttft_per_input_token_s": slo.ttft_per_input_token_s,
        "slo_tpot_s": slo.tpot_s,
        "billed_gpu_hours": result.node_seconds * sc.gpus_per_node / 3600.0,
        "gpu_hours": result.gpu_seconds / 3600.0,
        "slo_attainment": met / total if total else 1.0,
        "ttft_attainment": ttft_met / total if total else 1.0,
        "tpot_attainment": tpot_met / total if total else 1.0,
        "ttft_p50_s": served_percentile(ttfts, 50),
        "ttft_p95_s": served_percentile(ttfts, 95),
        "ttft_p99_s": served_percentile(ttfts, 99),
        "tpot_p95_s": served_percentile(tpots, 95),
        "node_hours": result.node_seconds / 3600.0,
        "scale_events": result.scale_events,
        "reaction_s": sum(reacted) / len(reacted) if reacted else None,
        "reactions_s": react,
        "initial_replicas": sc.initial_replicas,
        "peak_replicas": max([*desired, *(n for _, n in result.replica_changes)], default=0),
        "mean_ready_replicas": sum(ready) / len(ready) if ready else 0.0,
        "sim_s": sim_s,
        "wall_s": result.wall_s,
        "speedup_x": sim_s / result.wall_s if result.wall_s > 0 else None,
        "events": result.events,
        **result.notes,
    }
