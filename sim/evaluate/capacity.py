"""`ours` with each way of getting GPU nodes, for the "Capacity strategies" comparison.

All variants run the same policy with the same spec, `headroomReplicas` included (it is what
asks for spare room; without it the policy fills the nodes it keeps and there is nothing to
warm), and differ only in how its node decision reaches the cluster, as the live controller
actuates each `capacity.strategy`:

- `ours-capacity-static` (`StaticNodePool`, what `ours` does): the decided node count is set on
  a static NodePool;
- `ours-capacity-none` (`None`): a dynamic Karpenter pool (`NodeMode.KARPENTER`: nodes for
  pending pods, empty ones consolidated) and no warm room; a replica that finds no free GPU
  waits for Karpenter's batch and a node boot;
- `ours-capacity-placeholder` (`Headroom`): the decided nodes' spare GPU slots are filled with
  low-priority placeholder pods (`nodes * slots - replicas`); Karpenter launches nodes for them;
  a model pod that needs their room preempts one first (`preempt_s`, then the model loads);
- `ours-capacity-buffer` (`CapacityBuffer`): the same count is a CapacityBuffer's chunks;
  Karpenter keeps that room free and a model pod lands on it at once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from controller.plan import node_value
from controller.policy import Billing, PolicySpec, nodes_for, replicas_on
from sim.evaluate.cluster import NodeMode
from sim.evaluate.ours import Ours, OursConfig, policy_spec

if TYPE_CHECKING:
    from sim.evaluate.world import Scenario, World

PREEMPT_S = 2.0
"""Placeholder preemption until the model pod's container starts: the scheduler's preemption
cycle, the placeholder's deletion (grace 0) and the GPU's release (an assumption, not measured)."""

HEADROOM_REPLICAS: int | None = None
"""Spare replicas' worth of room the compared variants ask for; None: one node's worth (under
node billing the policy fills the nodes it keeps, so less than a node's worth of headroom is only
the slack of a node the replicas need anyway, and the strategies do not differ)."""


class OursCapacity(Ours):
    """`ours` on a dynamic Karpenter pool with one warm-room strategy (module docstring)."""

    node_mode = NodeMode.KARPENTER

    def __init__(
        self,
        strategy: str,
        *,
        headroom_replicas: int | None = HEADROOM_REPLICAS,
        preempt_s: float = PREEMPT_S,
        config: OursConfig | None = None,
    ) -> None:
        super().__init__(config, name=f"ours-capacity-{strategy}")
        self.strategy = strategy
        self.node_mode = NodeMode.STATIC if strategy == "static" else NodeMode.KARPENTER
        self.headroom_replicas = headroom_replicas
        self.preempt_s = preempt_s

    def _spec(self, scenario: Scenario) -> PolicySpec:
        spec = policy_spec(scenario, self.config)
        headroom = self.headroom_replicas
        if headroom is None:
            headroom = spec.gpus_per_node // max(spec.gpus_per_replica, 1)
        return replace(spec, headroom_replicas=headroom)

    def initial(self, scenario: Scenario) -> tuple[int, int | None]:
        """As `Ours.initial`, with the headroom: the nodes the initial replicas and the warm
        room need, filled under node billing."""
        spec, replicas = self._spec(scenario), scenario.initial_replicas
        if replicas <= 0:
            return replicas, None
        nodes = nodes_for(replicas, spec)
        if spec.billing is Billing.NODE:
            replicas = min(max(replicas_on(nodes, spec), replicas), spec.max_replicas)
        # Without warm room nothing keeps a node the replicas do not need.
        return replicas, None if self.strategy == "none" else nodes

    def attach(self, world: World) -> None:
        super().attach(world)
        self.spec = self._spec(world.scenario)
        if self.strategy == "placeholder":
            world.cluster.warm_preempt_s = self.preempt_s
        self._warm()

    def _evaluate(self, now: float) -> None:
        super()._evaluate(now)
        self._warm()

    def _warm(self) -> None:
        if self.strategy in ("none", "static"):
            return
        state, spec = self.policy_state, self.spec
        warm = node_value(
            state.nodes,
            state.replicas,
            counts_nodes=False,
            gpus_per_node=spec.gpus_per_node,
            gpus_per_replica=spec.gpus_per_replica,
        )
        if warm != self.world.cluster.warm:
            self.world.cluster.set_warm(warm)


def capacity_static() -> OursCapacity:
    return OursCapacity("static")


def capacity_none() -> OursCapacity:
    return OursCapacity("none")


def capacity_placeholder() -> OursCapacity:
    return OursCapacity("placeholder")


def capacity_buffer() -> OursCapacity:
    return OursCapacity("buffer")
