"""Which arrival rate the nodes are bought and kept for: one that lasts as long as a node takes.

Pure (no I/O, no clock), used by `controller.policy` under node billing.

A node asked for now serves one reacquire time later (node boot + model load: 240 s for a 70B
TP4 model). The short arrival window (2 s by default) says whether the rate has moved *now*; it
says nothing about the rate a reacquire time ahead. On the Azure code trace the arrivals come in
bursts of a few seconds: a 2 s window read 177 req/s against 10 req/s over the last minute (70B
code 4x at 216 s), the policy sized the fleet on the short window less its Poisson noise, bought
31 nodes, and they were Ready at 456 s, 240 s after the burst had ended, and released at once:
16.6 of ours' 64.0 billed GPU-hours bought nothing (1x: 8 nodes the same way, twice).

So under node billing new nodes are bought only for what the long-window rate (60 s) needs,
through the same ladder (sustained rate, headroom, trend) the policy sizes with: what the short
window shows beyond it fills the room on the nodes there are (replicas on nodes billed anyway
cost nothing), and more nodes come once the long window shows the rate has lasted. Nodes are
still *kept* for what the short window asked for (`controller.retention`: a burst that came
comes back). A decision held by this rule is `Reason.ShortBurst`. With `Billing.GPU` the short
window's excess still sizes the fleet (today's behaviour), and `PolicySpec.nodes_for_long_rate`
= False restores it under node billing.

Tried and not kept (docs/evaluate.md): sizing *everything* for the long-window rate (the TPOT
limit's rate per replica and the kept nodes too): 70B code 4x fell to 20 replicas and 96.75 %
within SLO, the bursts are what the replicas must hold.
"""

from __future__ import annotations

from controller.policy_types import Billing, PolicySpec

__all__ = ["sustained_rate"]


def sustained_rate(long_rate: float, short_rate: float, spec: PolicySpec) -> float:
    """The arrival rate new nodes are bought for: the long-window rate under node billing
    (with `nodes_for_long_rate`), else `short_rate` (the short window beyond Poisson noise, at
    least the long-window rate: `policy.sizing_arrival(step=False)`)."""
    if spec.billing is Billing.NODE and spec.nodes_for_long_rate:
        return max(long_rate, 0.0)
    return max(short_rate, 0.0)
