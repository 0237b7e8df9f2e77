"""A replica's useful concurrency: the largest batch whose TPOT p95 meets the objective.

Pure (no I/O, no clock). `controller.state` records, for each completed request, its TPOT and the
batch it ran in (in-flight requests per Ready replica when it completed) in a `TpotByBatch`;
`concurrency_basis` turns that and the spec into the per-replica concurrency the policy sizes with:

- a fixed `concurrency_per_replica` in the spec wins (the operator said so);
- with no TPOT objective it is the engine's `max_num_seqs` (decode gets slower with the batch,
  but nothing asks for less);
- with one, the largest batch whose TPOT p95 meets it: each batch bin (`bin_width` sequences)
  keeps its recent samples; a line through the bins' p95 (least squares, bins with at least
  `min_samples`) says where TPOT crosses the objective, clamped to `[1, max_num_seqs]` and never
  above a bin whose own p95 already misses it. Until two bins have data the seed is
  `max_num_seqs` (the engine profile's own batch limit);
- and never above the gateway's per-pod cap when the gateway reports one (`pod_cap`): a replica
  cannot get more than the gateway sends it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

BIN_WIDTH = 8
MIN_SAMPLES = 20
SAMPLES_PER_BIN = 64


class TpotByBatch:
    """Recent TPOT samples (seconds) per batch-size bin."""

    def __init__(self, *, bin_width: int = BIN_WIDTH, per_bin: int = SAMPLES_PER_BIN) -> None:
        self.bin_width = max(bin_width, 1)
        self.per_bin = per_bin
        self.bins: dict[int, deque[float]] = {}

    def add(self, batch: float, tpot_s: float) -> None:
        if not (batch > 0 and math.isfinite(batch) and tpot_s > 0 and math.isfinite(tpot_s)):
            return
        key = int((batch - 1e-9) // self.bin_width)
        samples = self.bins.get(key)
        if samples is None:
            samples = self.bins[key] = deque(maxlen=self.per_bin)
        samples.append(tpot_s)

    def p95_by_batch(self, min_samples: int = MIN_SAMPLES) -> list[tuple[float, float]]:
        """(bin centre batch, TPOT p95) for the bins with enough samples, by batch."""
        out = []
        for key in sorted(self.bins):
            samples = sorted(self.bins[key])
            if len(samples) < min_samples:
                continue
            rank = max(math.ceil(0.95 * len(samples)) - 1, 0)
            out.append(((key + 0.5) * self.bin_width, samples[rank]))
        return out

    def largest_batch(self, tpot_slo_s: float, *, max_num_seqs: int) -> int | None:
        """The largest batch whose TPOT p95 meets `tpot_slo_s`; None before two bins have data."""
        points = self.p95_by_batch()
        ceiling = float(max_num_seqs)
        for batch, p95 in points:
            if p95 > tpot_slo_s:
                ceiling = min(ceiling, max(batch - self.bin_width / 2, 1.0))
                break
        if len(points) < 2:
            return None if ceiling >= max_num_seqs else max(int(ceiling), 1)
        n = len(points)
        mx = sum(b for b, _ in points) / n
        my = sum(p for _, p in points) / n
        sxx = sum((b - mx) ** 2 for b, _ in points)
        slope = 0.0 if sxx <= 0 else sum((b - mx) * (p - my) for b, p in points) / sxx
        crossing = ceiling if slope <= 0 else mx + (tpot_slo_s - my) / slope
        return max(min(int(crossing), int(ceiling), max_num_seqs), 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Basis:
    """The per-replica concurrency the policy uses, and where it came from."""

    value: int
    source: str
    """"fixed", "max_num_seqs", "tpot" or "pod_cap"."""


def concurrency_basis(
    *,
    fixed: int | None,
    max_num_seqs: int,
    tpot_slo_s: float | None,
    learned: int | None,
    pod_cap: int | None,
) -> Basis:
    """See the module docstring."""
    if fixed is not None and fixed > 0:
        basis = Basis(value=fixed, source="fixed")
    elif tpot_slo_s is None or learned is None:
        basis = Basis(value=max(max_num_seqs, 1), source="max_num_seqs")
    else:
        basis = Basis(value=max(min(learned, max_num_seqs), 1), source="tpot")
    if pod_cap is not None and 0 < pod_cap < basis.value:
        return Basis(value=pod_cap, source="pod_cap")
    return basis
