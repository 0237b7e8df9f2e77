"""A replica's useful concurrency: the largest batch whose TPOT p95 meets the objective.

Pure (no I/O, no clock). `controller.state` records, for each completed request, its TPOT and the
batch it ran in (in-flight requests per Ready replica when it completed) in a `TpotByBatch`;
`concurrency_basis` turns that and the spec into the per-replica concurrency the policy sizes with:

- a fixed `concurrency_per_replica` in the spec wins (the operator said so);
- with no TPOT objective it is the engine's `max_num_seqs` (decode gets slower with the batch,
  but nothing asks for less);
- with one, the largest batch whose TPOT p95 meets it: each batch bin (`bin_width` sequences)
  keeps its recent samples, each with the decode stall the prefills around it explain removed
  (below); a line through the bins' p95 (least squares, bins with at least
  `min_samples`) says where TPOT crosses the objective, clamped to `[1, max_num_seqs]` and never
  above a bin whose own p95 already misses it. Until two bins have data the seed is
  `max_num_seqs` (the engine profile's own batch limit);
- and never above the gateway's per-pod cap when the gateway reports one (`pod_cap`): a replica
  cannot get more than the gateway sends it.

**Attributing TPOT to the batch, not to prefills.** With chunked prefill a decode step that
carries prompt chunks is slower, so a request's TPOT is its batch's decode time plus the prefill
work its replica took in while it decoded. During a burst of long prompts the second term
dominates (TPOT ~200 ms at batches where decode alone gives ~10 ms), and binning those samples by
batch size drove the learned concurrency to 1: a smaller batch would not have helped them, more
replicas for the prompts would. So each sample also carries `prefill_per_token`, the prompt
tokens dispatched per Ready replica during its decode divided by its output tokens (fed by
`controller.state`), and a least-squares fit over the recent samples, `tpot ~ a + b * batch + c *
prefill_per_token` (running sums, O(1) per sample), estimates `c` (seconds of stall per prompt
token per output token; never below 0). The bins judge `tpot - c * prefill_per_token`: the TPOT
the batch itself gives. Until `MIN_FIT_SAMPLES` samples with varying prefill load have been seen,
`c` is 0 (the samples are taken as they are).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass

BIN_WIDTH = 8
MIN_SAMPLES = 20
SAMPLES_PER_BIN = 64
FIT_SAMPLES = 512
"""Recent samples the prefill-stall fit runs over."""
REFIT_EVERY = 1
"""New samples after which the bins' line is fitted again (on the next question). 1 = after every
sample: a coarser cadence is cheaper but changes decisions (70B code 1x, ours' billed GPU-h and
within SLO refitting every 1 / 8 / 32 samples: 57.70 at 92.58 % / 50.42 at 92.40 % / 81.61 at
91.20 %), and a speed change must not change what the policy decides."""
MIN_FIT_SAMPLES = 64


class _Fit:
    """Least squares of `t ~ a + b * x1 + c * x2` over the last `size` samples (running sums)."""

    __slots__ = ("recent", "size", "sums")

    def __init__(self, size: int) -> None:
        self.size = size
        self.recent: deque[tuple[float, float, float]] = deque()
        # n, x1, x2, t, x1x1, x1x2, x2x2, x1t, x2t
        self.sums = [0.0] * 9

    def _fold(self, x1: float, x2: float, t: float, sign: float) -> None:
        s = self.sums
        for i, v in enumerate((1.0, x1, x2, t, x1 * x1, x1 * x2, x2 * x2, x1 * t, x2 * t)):
            s[i] += sign * v

    def add(self, x1: float, x2: float, t: float) -> None:
        self.recent.append((x1, x2, t))
        self._fold(x1, x2, t, 1.0)
        if len(self.recent) > self.size:
            self._fold(*self.recent.popleft(), -1.0)

    def stall(self, min_samples: int) -> float:
        """The fitted `c` (>= 0), or 0 with too few samples or no spread in `x2`."""
        n, x1, x2, t, x11, x12, x22, x1t, x2t = self.sums
        if n < min_samples:
            return 0.0
        # centred second moments
        s11 = x11 - x1 * x1 / n
        s12 = x12 - x1 * x2 / n
        s22 = x22 - x2 * x2 / n
        s1t = x1t - x1 * t / n
        s2t = x2t - x2 * t / n
        det = s11 * s22 - s12 * s12
        if s22 <= 1e-12 * max(n, 1.0):
            return 0.0
        if abs(det) <= 1e-12 * max(s11 * s22, 1e-300):
            c = s2t / s22  # batch carries no information of its own: one regressor
        else:
            c = (s11 * s2t - s12 * s1t) / det
        return c if c > 0 and math.isfinite(c) else 0.0


class TpotByBatch:
    """Recent TPOT samples (seconds) per batch-size bin, with the prefill load each saw."""

    def __init__(
        self,
        *,
        bin_width: int = BIN_WIDTH,
        per_bin: int = SAMPLES_PER_BIN,
        fit_samples: int = FIT_SAMPLES,
        min_fit_samples: int = MIN_FIT_SAMPLES,
    ) -> None:
        self.bin_width = max(bin_width, 1)
        self.per_bin = per_bin
        self.bins: dict[int, deque[tuple[float, float]]] = {}
        self.fit = _Fit(fit_samples)
        self.min_fit_samples = min_fit_samples
        self._ratios: list[float] = []
        """`prefill_per_token / batch` of the fit's recent samples, kept sorted (its median is
        the typical prefill load per batch sequence; O(log n) per sample instead of a sort of
        `fit_samples` values at every refit)."""
        self._line: tuple[list[tuple[float, float]], float, float] | None = None
        self._fitted = False
        self._fresh = 0
        """Samples added since the line was fitted."""

    def add(self, batch: float, tpot_s: float, prefill_per_token: float = 0.0) -> None:
        """One completed request: its batch, TPOT and the prompt tokens its replica took in
        per output token while it decoded (0: unknown or none)."""
        if not (batch > 0 and math.isfinite(batch) and tpot_s > 0 and math.isfinite(tpot_s)):
            return
        if not (prefill_per_token >= 0 and math.isfinite(prefill_per_token)):
            prefill_per_token = 0.0
        key = int((batch - 1e-9) // self.bin_width)
        samples = self.bins.get(key)
        if samples is None:
            samples = self.bins[key] = deque(maxlen=self.per_bin)
        samples.append((tpot_s, prefill_per_token))
        recent = self.fit.recent
        if len(recent) >= self.fit.size and recent:
            old_batch, old_load, _ = recent[0]  # the sample `fit.add` drops
            ratios = self._ratios
            del ratios[bisect_left(ratios, old_load / old_batch)]
        insort(self._ratios, prefill_per_token / batch)
        self.fit.add(batch, prefill_per_token, tpot_s)
        self._fresh += 1
        if self._fresh >= REFIT_EVERY or self._line is None:
            self._fitted = False

    def stall_s_per_prefill_token(self) -> float:
        """The fitted decode stall (s) per prompt token taken in per output token (>= 0)."""
        return self.fit.stall(self.min_fit_samples)

    def p95_by_batch(self, min_samples: int = MIN_SAMPLES) -> list[tuple[float, float]]:
        """(bin centre batch, TPOT p95 with the prefill stall removed) for the bins with enough
        samples, by batch."""
        out = []
        c = self.stall_s_per_prefill_token()
        per_batch = 0.0
        if c > 0:
            ratios = self._ratios
            per_batch = ratios[len(ratios) // 2]
        for key in sorted(self.bins):
            kept = self.bins[key]
            if len(kept) < min_samples:
                continue
            if c > 0:
                typical = per_batch * (key + 0.5) * self.bin_width
                # t - c * max(x - typical, 0), without the calls: the same floats
                samples = sorted([t - c * (x - typical) if x > typical else t for t, x in kept])
            else:
                samples = sorted([t for t, _ in kept])
            # nearest rank, as `surgescale.stats.percentile` (the bin is sorted already)
            rank = max(math.ceil(0.95 * len(samples)) - 1, 0)
            out.append(((key + 0.5) * self.bin_width, samples[rank]))
        return out

    def line(self) -> tuple[list[tuple[float, float]], float, float] | None:
        """The bins' (batch, p95) points and the least-squares line through them (intercept,
        slope); None before two bins have data. Fitted again after `REFIT_EVERY` new samples
        (at every new sample while there is no line yet)."""
        if self._fitted:
            return self._line
        self._fitted, self._fresh = True, 0
        points = self.p95_by_batch()
        if len(points) < 2:
            self._line = None
            return None
        n = len(points)
        mx = sum(b for b, _ in points) / n
        my = sum(p for _, p in points) / n
        sxx = sum((b - mx) ** 2 for b, _ in points)
        slope = 0.0 if sxx <= 0 else sum((b - mx) * (p - my) for b, p in points) / sxx
        self._line = (points, my - slope * mx, slope)
        return self._line

    def largest_batch(self, tpot_slo_s: float, *, max_num_seqs: int) -> int | None:
        """The largest batch whose TPOT p95 meets `tpot_slo_s`; None before two bins have data."""
        fitted = self.line()
        points = self.p95_by_batch() if fitted is None else fitted[0]
        ceiling = float(max_num_seqs)
        for batch, p95 in points:
            if p95 > tpot_slo_s:
                ceiling = min(ceiling, max(batch - self.bin_width / 2, 1.0))
                break
        if fitted is None:
            return None if ceiling >= max_num_seqs else max(int(ceiling), 1)
        _, intercept, slope = fitted
        crossing = ceiling if slope <= 0 else (tpot_slo_s - intercept) / slope
        return max(min(int(crossing), int(ceiling), max_num_seqs), 1)

    def slowdown(self, from_batch: float, to_batch: float) -> float:
        """How much longer a token takes at batch `to_batch` than at `from_batch`, from the
        fitted line (at least 1: a smaller batch is not assumed faster); 1 before a line."""
        fitted = self.line()
        if fitted is None or to_batch <= from_batch:
            return 1.0
        _, intercept, slope = fitted
        base = intercept + slope * max(from_batch, 1.0)
        if slope <= 0 or base <= 0:
            return 1.0
        return max((intercept + slope * to_batch) / base, 1.0)


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
