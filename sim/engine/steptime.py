"""How long one engine step takes: a roofline model anchored on a measured table.

A step runs `n_decode` decode tokens (one per running sequence, each attending to its context) and
`prefill_tokens` prompt tokens (chunks of prompts). Its GPU time is the roofline

    max(bytes moved / bandwidth, FLOPs / compute rate)

with bytes = weights + KV cache read (bytes per token x context tokens) and FLOPs = 2 per weight
parameter per new token (= `weight_bytes` for bf16) + attention (4 x layers x heads x head_dim per
query/key pair). Bandwidth is fitted on the batch-1 decode row (weights only, memory-bound) and the
compute rate on the best batch-1 prefill row (compute-bound); both are effective rates, not data
sheet peaks.

A pure roofline misses the measured curve where memory and compute overlap imperfectly (mid-size
batches) by up to ~25 %, so the table also supplies a correction factor, measured / roofline, at
each measured point: interpolated linearly in log2(batch) and log2(context) for decode and in
log2(tokens) for prefill, clamped at the table's edges. Inside the table the model reproduces the
measurements exactly; outside it the roofline extrapolates with the nearest edge's factor. A step
that mixes decode and prefill uses the token-weighted mean of the two factors.

On top of the GPU time come a constant per-step engine overhead (scheduling, sampling,
detokenisation; stated per profile) and, for tensor parallelism, the all-reduces the shard tables
leave out: `allreduces_per_step x (latency + ring traffic / link bandwidth)`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sim.engine.calibration import CalibrationTable


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorParallel:
    """The communication a tensor-parallel group adds to every step (not in the shard tables)."""

    size: int = 1
    allreduces_per_step: int = 0
    allreduce_latency_s: float = 0.0
    link_bytes_per_s: float = 1.0
    hidden_size: int = 0


def _interp(xs: tuple[float, ...], ys: tuple[float, ...], x: float) -> float:
    """Piecewise-linear interpolation over sorted `xs`, clamped at both ends."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect_right(xs, x)
    x0, x1 = xs[i - 1], xs[i]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepTimeModel:
    """Step duration for a batch; build it with `StepTimeModel.fit(table, ...)`."""

    weight_bytes: float
    kv_bytes_per_token: float
    flops_per_token: float
    attn_flops_per_pair: float
    bytes_per_s: float
    flops_per_s: float
    overhead_s: float
    tp: TensorParallel
    # decode correction: one row per measured context, each over log2(batch)
    decode_log_ctx: tuple[float, ...]
    decode_rows: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    # prefill correction over log2(tokens in the step)
    prefill_log_tokens: tuple[float, ...]
    prefill_corr: tuple[float, ...]
    _rows_at: dict[int, tuple[float, ...]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )
    """The decode rows interpolated at each batch size seen (`decode_correction`'s first stage,
    the same for every step of that batch: a cache, computed as before)."""

    @classmethod
    def fit(
        cls,
        table: CalibrationTable,
        *,
        attn_flops_per_pair: float,
        overhead_s: float,
        bandwidth_scale: float = 1.0,
        tp: TensorParallel | None = None,
    ) -> StepTimeModel:
        """Fit the roofline rates and the correction grid to `table`.

        `bandwidth_scale` derives another GPU of the same compute class from this table (for
        example H100 from H200: the ratio of their HBM bandwidths); the correction factors carry
        over unchanged.
        """
        w = float(table.weight_bytes)
        k = float(table.kv_bytes_per_token)
        f = w  # 2 FLOPs per bf16 parameter (2 bytes) per token

        first = min((p for p in table.decode if p.batch == 1), key=lambda p: p.context)
        bytes_per_s = (w + k * first.context) / first.seconds
        rate = max(
            (f * p.prompt + attn_flops_per_pair * p.prompt * (p.prompt + 1) / 2) / p.seconds
            for p in table.prefill
            if p.batch == 1
        )

        def roof(mem: float, flops: float) -> float:
            return max(mem / bytes_per_s, flops / rate)

        by_ctx: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for d in table.decode:
            r = roof(
                w + k * d.batch * d.context, f * d.batch + attn_flops_per_pair * d.batch * d.context
            )
            by_ctx[d.context].append((math.log2(d.batch), d.seconds / r))
        rows = []
        for ctx in sorted(by_ctx):
            pts = sorted(by_ctx[ctx])
            rows.append((tuple(x for x, _ in pts), tuple(y for _, y in pts)))
        pre = sorted(
            (
                math.log2(p.prompt),
                p.seconds
                / roof(
                    w + k * p.prompt,
                    f * p.prompt + attn_flops_per_pair * p.prompt * (p.prompt + 1) / 2,
                ),
            )
            for p in table.prefill
            if p.batch == 1
        )
        return cls(
            weight_bytes=w,
            kv_bytes_per_token=k,
            flops_per_token=f,
            attn_flops_per_pair=attn_flops_per_pair,
            bytes_per_s=bytes_per_s * bandwidth_scale,
            flops_per_s=rate,
            overhead_s=overhead_s,
            tp=tp or TensorParallel(),
            decode_log_ctx=tuple(math.log2(c) for c in sorted(by_ctx)),
            decode_rows=tuple(rows),
            prefill_log_tokens=tuple(x for x, _ in pre),
            prefill_corr=tuple(y for _, y in pre),
        )

    def decode_correction(self, batch: int, mean_context: float) -> float:
        """Measured/roofline factor for a decode batch (interpolated, clamped)."""
        vals = self._rows_at.get(batch)
        if vals is None:
            lb = math.log2(max(batch, 1))
            vals = self._rows_at[batch] = tuple(_interp(xs, ys, lb) for xs, ys in self.decode_rows)
        return _interp(self.decode_log_ctx, vals, math.log2(max(mean_context, 1.0)))

    def prefill_correction(self, tokens: int) -> float:
        """Measured/roofline factor for a prefill of `tokens` tokens (interpolated, clamped)."""
        return _interp(self.prefill_log_tokens, self.prefill_corr, math.log2(max(tokens, 1)))

    def comm_seconds(self, tokens: int) -> float:
        """All-reduce time a tensor-parallel step adds for `tokens` new tokens."""
        tp = self.tp
        if tp.size <= 1 or tp.allreduces_per_step == 0:
            return 0.0
        ring = 2.0 * (tp.size - 1) / tp.size * tokens * tp.hidden_size * 2 / tp.link_bytes_per_s
        return tp.allreduces_per_step * (tp.allreduce_latency_s + ring)

    def seconds(
        self,
        *,
        n_decode: int,
        decode_context: int,
        prefill_tokens: int = 0,
        prefill_pairs: float = 0.0,
        prefill_kv_read: int = 0,
    ) -> float:
        """Duration of one step.

        `decode_context` is the sum over decode sequences of the tokens each attends to;
        `prefill_pairs` the attention query/key pairs of the prefill chunks, `prefill_kv_read`
        the cached tokens those chunks read.
        """
        tokens = n_decode + prefill_tokens
        if tokens == 0:
            return 0.0
        mem = self.weight_bytes + self.kv_bytes_per_token * (decode_context + prefill_kv_read)
        flops = self.flops_per_token * tokens + self.attn_flops_per_pair * (
            decode_context + prefill_pairs
        )
        if prefill_tokens == 0:
            return self.decode_seconds(n_decode, decode_context)
        roof = max(mem / self.bytes_per_s, flops / self.flops_per_s)
        if n_decode == 0:
            corr = self.prefill_correction(prefill_tokens)
        else:
            corr = (
                n_decode * self.decode_correction(n_decode, decode_context / n_decode)
                + prefill_tokens * self.prefill_correction(prefill_tokens)
            ) / tokens
        return roof * corr + self.overhead_s + self.comm_seconds(tokens)

    def decode_seconds(self, batch: int, context_sum: int) -> float:
        """Duration of a pure decode step of `batch` sequences with `context_sum` tokens in all."""
        return self.decode_curve(batch)(context_sum)

    def decode_curve(self, batch: int) -> Callable[[int], float]:
        """`decode_seconds` for a fixed batch size, as a fast function of the context sum.

        The per-batch parts (correction rows, compute, overhead) are computed once; what is left
        per call is a handful of float operations. Engines cache these by batch size; the
        virtual-time fast path calls one per skipped step.
        """
        lb = math.log2(max(batch, 1))
        vals = tuple(_interp(xs, ys, lb) for xs, ys in self.decode_rows)
        lctx = self.decode_log_ctx
        # one (x0, x1, y0, slope) per segment between measured contexts, clamped outside
        segments = tuple(
            (lctx[i], lctx[i + 1], vals[i], (vals[i + 1] - vals[i]) / (lctx[i + 1] - lctx[i]))
            for i in range(len(lctx) - 1)
        )
        lo_x, hi_x, lo_y, hi_y = lctx[0], lctx[-1], vals[0], vals[-1]
        w, k, bw = self.weight_bytes, self.kv_bytes_per_token, self.bytes_per_s
        fb, a, rate = self.flops_per_token * batch, self.attn_flops_per_pair, self.flops_per_s
        extra = self.overhead_s + self.comm_seconds(batch)
        log2 = math.log2
        inv_batch = 1.0 / batch

        def seconds(context_sum: int) -> float:
            mem = (w + k * context_sum) / bw
            comp = (fb + a * context_sum) / rate
            x = log2(context_sum * inv_batch) if context_sum > batch else 0.0
            corr = hi_y
            if x <= lo_x:
                corr = lo_y
            elif x < hi_x:
                for x0, x1, y0, slope in segments:
                    if x < x1:
                        corr = y0 + slope * (x - x0)
                        break
            return (mem if mem > comp else comp) * corr + extra

        return seconds
