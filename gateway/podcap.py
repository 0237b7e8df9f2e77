"""The per-pod cap the gateway applies: the controller's published TPOT concurrency, bounded.

Pure (no I/O, no clock). The controller learns a replica's useful concurrency (the largest batch
whose TPOT p95 meets the objective, `controller.concurrency`) and may publish it; the gateway caps
each pod at `applied_cap(...)` of what it read:

- nothing published (or stale): the configured cap (`--max-concurrency-per-pod`, by default the
  engine's `max_num_seqs`): the gateway's behaviour without a controller;
- published `n`: `n`, never below `floor` (a learner that has seen only prefill-stalled batches
  must not queue everything at the gateway) and never above the configured cap (the operator's
  bound stands).

The evaluator's gateway (`sim.evaluate.ingress`, policies `ours-tpotcap<N>`) applies it. The live
gateway does not yet: on the default matrix the learned cap improved the two scenarios that miss
the target without making either meet it (docs/evaluate.md, "The gateway's per-pod cap from the
TPOT objective"), so the live cap stays the configured one until a variant does; this is the
rule it would apply.
"""

from __future__ import annotations


def applied_cap(*, published: int | None, configured: int, floor: int) -> int:
    """The per-pod cap to apply (at least 1)."""
    configured = max(configured, 1)
    if published is None or published <= 0:
        return configured
    return max(min(max(published, floor), configured), 1)
