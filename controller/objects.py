"""Typed views of the Kubernetes objects the controller reads: the fields it uses, nothing more.

The informers and readers hand objects around as the JSON the API server sent (`orjson.loads`,
no client models: `controller.kube`). These `TypedDict`s name the fields the controller reads so
mypy checks them, at no cost at run time (a view is the same dict). Every key is optional
(`total=False`): an object from the API may lack any of them, and the readers keep their
`.get(...) or default` habit. Fields the controller never reads are not listed; a view does not
reject them.

Which object each view is for: `Deployment` (`controller.scaler`, `controller.pods`), `Node` and
`NodePool` (`controller.scaler`), `Pod` (`controller.pods`), `Lease` (`controller.lease`,
`controller.shards`), `CapacityBuffer` (`controller.buffer`), `InferenceScalerObject` (its `spec`
is validated by `controller.crd.parse_spec`). `ScalerStatus` is the status the controller writes
back, `Condition` one entry of its `conditions` (`controller.scaler`).
"""

from __future__ import annotations

from typing import Any, Generic, TypedDict, TypeVar


class ObjectMeta(TypedDict, total=False):
    """`metadata` of any object."""

    name: str
    namespace: str
    uid: str
    generation: int
    resourceVersion: str
    labels: dict[str, str]
    annotations: dict[str, str]
    deletionTimestamp: str


class KubeObject(TypedDict, total=False):
    """What every object has: the fields an informer keys it by."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta


class ListMeta(TypedDict, total=False):
    resourceVersion: str


T = TypeVar("T", bound=KubeObject)


class ObjectList(TypedDict, Generic[T], total=False):
    """The body of a list call."""

    metadata: ListMeta
    items: list[T]


class LabelSelector(TypedDict, total=False):
    matchLabels: dict[str, str]
    matchExpressions: list[dict[str, Any]]
    """Not interpreted (a selector with expressions leaves the pods unranked)."""


class DeploymentSpec(TypedDict, total=False):
    replicas: int
    selector: LabelSelector


class DeploymentStatus(TypedDict, total=False):
    replicas: int
    readyReplicas: int


class Deployment(KubeObject, total=False):
    spec: DeploymentSpec
    status: DeploymentStatus


class NodeCondition(TypedDict, total=False):
    type: str
    status: str


class NodeStatus(TypedDict, total=False):
    conditions: list[NodeCondition]


class Node(KubeObject, total=False):
    spec: dict[str, object]
    """Not read (listed so a handler given Nodes and NodePools can ask either for `spec`)."""
    status: NodeStatus


class ReplicasSpec(TypedDict, total=False):
    """`spec` of an object sized by a replica count (a NodePool, a CapacityBuffer)."""

    replicas: int


class NodePool(KubeObject, total=False):
    """A Karpenter `karpenter.sh/v1` NodePool (its `scale` subresource sets `spec.replicas`)."""

    spec: ReplicasSpec


class CapacityBuffer(KubeObject, total=False):
    """An `autoscaling.x-k8s.io` CapacityBuffer (`controller.buffer`)."""

    spec: ReplicasSpec


class PodStatus(TypedDict, total=False):
    podIP: str


class PodSpec(TypedDict, total=False):
    nodeName: str


class Pod(KubeObject, total=False):
    spec: PodSpec
    status: PodStatus


class LeaseSpec(TypedDict, total=False):
    holderIdentity: str
    leaseDurationSeconds: int
    acquireTime: str
    renewTime: str
    leaseTransitions: int


class Lease(KubeObject, total=False):
    """A `coordination.k8s.io/v1` Lease."""

    spec: LeaseSpec


class InferenceScalerObject(KubeObject, total=False):
    """An InferenceScaler as watched; `spec` is raw until `controller.crd.parse_spec` checks it."""

    spec: dict[str, Any]


class Condition(TypedDict):
    """One entry of an InferenceScaler's `status.conditions`, as the controller writes it."""

    type: str
    status: str
    """"True" or "False"."""
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class ScalerStatus(TypedDict, total=False):
    """An InferenceScaler's `status` as the controller writes it (`controller.scaler.status_of`;
    its schema: `controller.crd.status_schema`). A value not known is left out, not null."""

    observedGeneration: int
    queueDepth: int
    inFlight: int
    arrivalRate: float
    currentReplicas: int
    readyReplicas: int
    startingReplicas: int
    readyNodes: int
    ttftP95Ms: float
    tpotP95Ms: float
    desiredReplicas: int
    desiredNodes: int
    warmReplicas: int
    lastScaleTime: str
    lastScaleReason: str
    conditions: list[Condition]
