"""One InferenceScaler as the controller sees it, and the pure views derived from it.

`Scaler` holds the parsed spec (or the `SpecError` that made it invalid), the policy state, the
last observation and decision, and the conditions; `status_of` renders the status subresource;
`cluster_counts` turns the informers' Deployment / Node / NodePool objects into the policy's
ready and starting counts. No I/O here: `controller.loop` does the watching and the writing.

**Opt-in (no confused deputy).** The controller may scale far more than an InferenceScaler's
author may (any Deployment in the namespace, any NodePool in the cluster), so it acts only on
targets whose owners opted in: the scaled Deployment, the headroom Deployment and the NodePool
must each carry the label `surgescale.io/scalable: "true"`. `opt_in_refusal` names the first
target that does not; the loop then writes nothing for that scaler and shows why in the
`TargetAllowed` condition (reason `TargetNotOptedIn`). A CapacityBuffer is not watched: its label
is checked at each write (`controller.buffer`).

`set_condition` keeps `lastTransitionTime` unless the status changes and queues each transition
of a standard condition (`controller.conditions`) for an Event (`controller.report`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from controller import crd
from controller.actuator import ScaleTarget, TargetKind
from controller.kube import NODEPOOL_LABEL, now_rfc3339
from controller.objects import Condition, Deployment, KubeObject, Node, NodePool, ScalerStatus
from controller.policy import Decision, Observation, PolicySpec, PolicyState
from controller.schedule import EvalGate
from controller.state import ClusterCounts

ABNORMAL_WHEN_TRUE = frozenset({"CapacityUnavailable"})
"""Condition types whose True is the state that needs attention (the others: False;
`ScalingLimited` is neither: a bound holding the count is the spec at work)."""

Key = tuple[str, str]
"""(namespace, name)"""


class Transition(TypedDict):
    """A condition that changed status (or appeared in a bad state), queued for an Event."""

    type: str
    status: str
    abnormal: bool
    """The new status is the one that needs attention (a Warning Event)."""
    reason: str


# The HPA-style conditions (set by controller.conditions) in the order status lists them, after
# the project's own: `kubectl describe` then reads the same whichever condition appeared first.
STANDARD_CONDITIONS: tuple[str, ...] = (
    "AbleToScale",
    "ScalingActive",
    "ScalingLimited",
    "CapacityUnavailable",
    "Ready",
)


def ordered_conditions(conds: Iterable[Condition]) -> list[Condition]:
    """Project conditions first (as they appeared), then the standard ones in a fixed order."""
    rank = {kind: i + 1 for i, kind in enumerate(STANDARD_CONDITIONS)}
    return sorted(conds, key=lambda c: rank.get(c["type"], 0))


@dataclass(slots=True)
class Scaler:
    """One InferenceScaler as the controller sees it."""

    key: Key
    uid: str | None = None
    generation: int = 0
    spec: crd.InferenceScalerSpec | None = None
    policy_spec: PolicySpec | None = None
    error: crd.SpecError | None = None
    state: PolicyState | None = None
    gate: EvalGate = field(default_factory=EvalGate)
    """When this scaler is evaluated next (rate limit, trailing and urgent evaluations)."""
    decision: Decision | None = None
    observation: Observation | None = None
    last_scale_time: str | None = None
    last_scale_reason: str = ""
    status_written: ScalerStatus | None = None
    conditions: dict[str, Condition] = field(default_factory=dict)
    reported_error: str | None = None
    transitions: deque[Transition] = field(default_factory=lambda: deque(maxlen=32))
    """Conditions that changed status (or appeared in a bad state), for Events; bounded."""
    starting_since: float | None = None
    """Since when (controller clock) some replicas have been starting without a break."""
    nodes_starting_since: float | None = None
    """Since when some nodes have been on their way without a break."""

    @property
    def name(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"

    @property
    def model(self) -> str | None:
        return None if self.spec is None else self.spec.model

    def deployment(self) -> ScaleTarget | None:
        if self.spec is None:
            return None
        return ScaleTarget(TargetKind.DEPLOYMENT, self.spec.scale_target_ref.name, self.key[0])

    def node_target(self) -> ScaleTarget | None:
        cap = None if self.spec is None else self.spec.capacity
        if cap is None:
            return None
        if cap.strategy is crd.CapacityStrategy.STATIC_NODE_POOL and cap.node_pool_ref:
            return ScaleTarget(TargetKind.NODEPOOL, cap.node_pool_ref.name)
        if cap.strategy is crd.CapacityStrategy.HEADROOM and cap.headroom_deployment_ref:
            return ScaleTarget(TargetKind.DEPLOYMENT, cap.headroom_deployment_ref.name, self.key[0])
        if cap.strategy is crd.CapacityStrategy.CAPACITY_BUFFER and cap.capacity_buffer_ref:
            return ScaleTarget(
                TargetKind.CAPACITY_BUFFER, cap.capacity_buffer_ref.name, self.key[0]
            )
        return None

    def warm_replicas(self) -> int | None:
        """Spare replicas' worth of GPUs on the decided nodes (placeholders or buffer chunks)."""
        if self.spec is None or self.decision is None or not self.decision.valid:
            return None
        if self.node_target() is None:
            return None
        cap = self.spec.capacity
        slots = max(cap.gpus_per_node // cap.gpus_per_replica, 1)
        return max(self.decision.nodes * slots - self.decision.replicas, 0)

    def set_condition(
        self, kind: str, ok: bool, reason: str, message: str, *, notify: bool = False
    ) -> None:
        """Set a condition; `notify` queues a transition (for an Event) when its status changes,
        or when it first appears in an abnormal state."""
        status = "True" if ok else "False"
        old = self.conditions.get(kind)
        if (
            old
            and old["status"] == status
            and old["reason"] == reason
            and old["message"] == message
        ):
            return
        changed = old is None or old["status"] != status
        abnormal = ok is (kind in ABNORMAL_WHEN_TRUE) and kind != "ScalingLimited"
        if notify and ((old is None and abnormal) or (old is not None and changed)):
            self.transitions.append(
                {"type": kind, "status": status, "abnormal": abnormal, "reason": reason}
            )
        self.conditions[kind] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_rfc3339()
            if changed or old is None
            else old["lastTransitionTime"],
            "observedGeneration": self.generation,
        }


CONCURRENCY_CONDITION = "ConcurrencyMatchesGateway"


def concurrency_condition(scaler: Scaler, obs: Observation) -> None:
    """Say in a condition whether the gateway's per-pod cap (from its snapshots) agrees with the
    concurrency per replica the policy plans with; unknown until a gateway reports its cap."""
    wanted, cap = obs.concurrency_per_replica, obs.pod_cap
    if wanted is None or cap is None:
        return
    if cap == wanted:
        scaler.set_condition(
            CONCURRENCY_CONDITION, True, "Matches", f"gateway per-pod cap {cap} = concurrency"
        )
        return
    used = min(cap, wanted)
    scaler.set_condition(
        CONCURRENCY_CONDITION,
        False,
        "PodCapDiffers",
        f"gateway per-pod cap {cap} != concurrencyPerReplica {wanted} (from the spec or the "
        f"TPOT objective); the policy plans with {used}",
    )


def cluster_counts(
    scaler: Scaler,
    *,
    deployments: Mapping[Key, Deployment],
    nodes: Iterable[Node],
    pools: Mapping[Key, NodePool],
) -> ClusterCounts | None:
    """Ready / starting replicas (from the Deployment) and nodes (from the NodePool and its
    Nodes) of a scaler's targets; None while the Deployment is unknown."""
    target = scaler.deployment()
    if target is None:
        return None
    dep = deployments.get((target.namespace, target.name))
    if dep is None:
        return None
    spec_replicas = int((dep.get("spec") or {}).get("replicas") or 0)
    status = dep.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    total = int(status.get("replicas") or 0)
    starting = max(max(spec_replicas, total) - ready, 0)
    ready_nodes = starting_nodes = 0
    node_target = scaler.node_target()
    if node_target is not None and node_target.kind is TargetKind.NODEPOOL:
        pool_nodes = [
            n
            for n in nodes
            if ((n.get("metadata") or {}).get("labels") or {}).get(NODEPOOL_LABEL)
            == node_target.name
        ]
        ready_nodes = sum(1 for n in pool_nodes if node_ready(n))
        pool = pools.get(("", node_target.name))
        wanted = int(((pool or {}).get("spec") or {}).get("replicas") or 0)
        starting_nodes = max(wanted - ready_nodes, len(pool_nodes) - ready_nodes, 0)
    return ClusterCounts(
        ready_replicas=ready,
        starting_replicas=starting,
        ready_nodes=ready_nodes,
        starting_nodes=starting_nodes,
    )


OPT_IN_LABEL = "surgescale.io/scalable"
"""The label by which a Deployment or NodePool opts in to being scaled (value `"true"`)."""


def opted_in(obj: KubeObject | None) -> bool:
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return bool(labels.get(OPT_IN_LABEL) == "true")


def opt_in_refusal(
    scaler: Scaler, *, deployments: Mapping[Key, Deployment], pools: Mapping[Key, NodePool]
) -> str | None:
    """Why the scaler may not act on its targets (the first one not seen to opt in, including
    one not seen at all, e.g. before the NodePool watch has listed it), or None."""
    for target in (scaler.deployment(), scaler.node_target()):
        if target is None or target.kind is TargetKind.CAPACITY_BUFFER:
            continue  # a CapacityBuffer's label is checked at the write (controller.buffer)
        obj: KubeObject | None
        if target.kind is TargetKind.NODEPOOL:
            obj = pools.get(("", target.name))
        else:
            obj = deployments.get((target.namespace, target.name))
        if obj is None:
            return f"{target} not found (its opt-in cannot be checked); it is not scaled"
        if not opted_in(obj):
            return f'{target} lacks the label {OPT_IN_LABEL}: "true"; it is not scaled'
    return None


def status_of(scaler: Scaler) -> ScalerStatus:
    """The status subresource body for a scaler (what is not known is left out)."""
    status: ScalerStatus = {"observedGeneration": scaler.generation}
    obs, decision = scaler.observation, scaler.decision
    if obs is not None:
        status["queueDepth"] = obs.queue_depth
        status["inFlight"] = obs.in_flight
        status["arrivalRate"] = round(obs.arrival_rate_short, 3)
        status["currentReplicas"] = obs.ready_replicas + obs.starting_replicas
        status["readyReplicas"] = obs.ready_replicas
        status["startingReplicas"] = obs.starting_replicas
        status["readyNodes"] = obs.ready_nodes
        if obs.ttft_p95_s is not None:
            status["ttftP95Ms"] = round(obs.ttft_p95_s * 1000, 1)
        if obs.tpot_p95_s is not None:
            status["tpotP95Ms"] = round(obs.tpot_p95_s * 1000, 2)
    if decision is not None and decision.valid:
        status["desiredReplicas"] = decision.replicas
        status["desiredNodes"] = decision.nodes
        warm = scaler.warm_replicas()
        if warm is not None:
            status["warmReplicas"] = warm
    if scaler.last_scale_time:
        status["lastScaleTime"] = scaler.last_scale_time
        status["lastScaleReason"] = scaler.last_scale_reason
    status["conditions"] = ordered_conditions(scaler.conditions.values())
    return status


def node_ready(node: Node) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False
