"""The arrival rate per replica the TPOT objective allows when prefills stall decode.

Pure (no I/O, no clock). `controller.state` feeds it; the policy sizes with it
(`Observation.stall_rate_per_replica`, `Reason.PREFILL_STALL`).

With chunked prefill, a replica that takes in prompts at `lam` requests/s of `P` tokens each,
and prefills at `R` tokens/s, spends the fraction `f = lam * P / R` of its time on prefill; the
decode steps of the requests it holds are stretched by that, so a token that takes `base` at the
batch alone takes

    tpot = base + f * tpot   =>   tpot = base / (1 - lam * P / R)

and TPOT meets the objective `T` while `lam <= (1 - base / T) * R / P`. That is a replica's
capacity under the objective when prompts are long: on 70B TP4 code (mean prompt 2,048 tokens,
prefill ~14k tokens/s, decode ~18 ms a token at a small batch) about 4.4 requests/s, where the
batch a replica holds says nothing (a decode-only step at batch 256 is ~35 ms, under 50 ms) and
Little's law on the in-pod time at low load says hundreds.

`R` is measured, not configured: each request's prompt tokens over its time from dispatch to
first token (`controller.state`), a high quantile of the recent ones (a request prefilled alone
shows the replica's rate; one that waited behind others' prefills shows less). Not the stall
regression of `controller.concurrency` (`tpot ~ base + c * load`): its `c` moved by a factor of
100 within minutes on 70B code 4x (the rate it gave ranged 17-12,000 requests/s). `base` is a
low quantile (p10) of the recent TPOTs, a token with little prefill around it; the TPOT-by-batch
line of `controller.concurrency` at today's batch came near the objective during bursts (its
bins carry the stalls), the rate fell to 0.05/s and 58 nodes were bought (74.04 billed GPU-h).

None when the prefill rate or the mean prompt is unknown, or decode alone already misses the
objective (then prefills are not what to size by).
"""

from __future__ import annotations

import math

__all__ = ["stall_rate"]


def stall_rate(
    *,
    base_tpot_s: float | None,
    prefill_tokens_per_s: float | None,
    mean_prompt_tokens: float | None,
    tpot_slo_s: float | None,
) -> float | None:
    """Requests/s per replica at which the prefill stall brings TPOT to the objective (see the
    module docstring); None when it does not apply."""
    if tpot_slo_s is None or tpot_slo_s <= 0 or base_tpot_s is None or base_tpot_s <= 0:
        return None
    rate = prefill_tokens_per_s
    if rate is None or not (rate > 0 and math.isfinite(rate)):
        return None
    if mean_prompt_tokens is None or not mean_prompt_tokens > 0:
        return None
    spare = 1.0 - base_tpot_s / tpot_slo_s
    if spare <= 0:
        return None
    return spare * rate / mean_prompt_tokens
