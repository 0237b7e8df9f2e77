"""What a decision asks of the cluster and in which order: the rules between `decide` and the writes.

Pure (no I/O, no clock), beside `controller.policy`: the policy decides replicas and nodes; this
module turns a `Decision` into the values and the order of the scale requests, and the runtime
(`controller.loop`) only reads the actuator's state and submits what it is told.

- `node_value`: the value written to a scaler's node target. A static NodePool gets the decided
  node count; a Headroom Deployment or a CapacityBuffer gets the placeholders that fill the
  decided nodes' spare GPU slots (`nodes * replicas per node - replicas`, at least 0).
- `plan`: more replicas go out nodes first (the pods need somewhere to land), fewer replicas pods
  first.
- `nodes_may_follow`: on the way down, fewer nodes only once the pods are down (a node removed
  while the pods that are to stay still run on it takes their streams along); a later evaluation
  submits the nodes.
- `outcome`: the label of a decision against the current replicas (metrics).

The other rule that decides *when* (an evaluation bypasses the rate limit when the queue grew since
the last one) is `controller.schedule.EvalGate.is_urgent`, pure as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from controller.policy_types import Decision

Outcome = Literal["invalid", "up", "down", "hold"]


def node_value(
    nodes: int, replicas: int, *, counts_nodes: bool, gpus_per_node: int, gpus_per_replica: int
) -> int:
    """The node target's value for `nodes` decided nodes and `replicas` decided replicas: the
    nodes (`counts_nodes`, a NodePool) or the placeholders that fill their spare slots."""
    if counts_nodes:
        return nodes
    slots = max(gpus_per_node // max(gpus_per_replica, 1), 1)
    return max(nodes * slots - replicas, 0)


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """The scale requests of one decision."""

    replicas: int
    nodes: int | None
    """The node target's value (None: the scaler has no node target)."""
    nodes_first: bool
    """True: the node target before the Deployment (scaling up); False: the Deployment first,
    the nodes after it only when `nodes_may_follow`."""


def plan(decision: Decision, current: int, nodes: int | None) -> ScalePlan:
    """The requests for `decision` when the Deployment has `current` replicas."""
    return ScalePlan(
        replicas=decision.replicas, nodes=nodes, nodes_first=decision.replicas > current
    )


def nodes_may_follow(
    nodes: int,
    nodes_now: int | None,
    *,
    pods_pending: int | None,
    pods_applied: int | None,
    replicas: int,
) -> bool:
    """Whether the node target may be set to `nodes` now, after the Deployment was asked for
    `replicas`: always unless that lowers it below `nodes_now` while the pods are not yet down
    (a value still pending on the Deployment, or more replicas applied than asked for)."""
    pods_settled = pods_pending is None and (pods_applied or 0) <= replicas
    return nodes_now is None or nodes >= nodes_now or pods_settled


def outcome(decision: Decision, current: int) -> Outcome:
    """`invalid`, `up`, `down` or `hold` against the `current` replicas."""
    if not decision.valid:
        return "invalid"
    if decision.replicas > current:
        return "up"
    if decision.replicas < current:
        return "down"
    return "hold"
