"""Policy specs the policy tests share.

`TP4_NODE` is a 70B TP4-like model under node billing: 4 GPUs per replica on 8-GPU nodes (two
replicas a node), 120 s model load and 120 s node boot (240 s from asking for a node to a Ready
replica), a TPOT objective of 50 ms, concurrency learned, no scale to zero, no trend. Tests
`dataclasses.replace` what they vary. `observation(now, defaults, **kw)` builds the
`Observation` each policy test file describes by its own defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.policy import Billing, Observation, PolicySpec

TP4_NODE = PolicySpec(
    min_replicas=0,
    max_replicas=16,
    tpot_slo_s=0.05,
    concurrency_per_replica=None,
    scale_to_zero_idle_s=None,
    gpus_per_replica=4,
    gpus_per_node=8,
    billing=Billing.NODE,
    cold_start_s=120.0,
    node_boot_s=120.0,
    trend_z=None,
)


def observation(now: float, defaults: Mapping[str, Any], **kw: Any) -> Observation:
    """An `Observation` at `now` (its data, and its last enqueue unless `defaults` or `kw` say
    otherwise): a test file's `defaults`, then `kw`."""
    return Observation(**{"now_data": now, "last_enqueue_at": now, **defaults, **kw})
