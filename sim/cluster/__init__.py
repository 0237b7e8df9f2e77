"""A simulated Kubernetes API server with pod, node and Karpenter lifecycles (interface #5).

Faithful enough that unmodified kubectl (1.20 and 1.32) and kubernetes_asyncio work against it:
discovery, CRUD with resourceVersions and 409 conflicts, list/watch with selectors and 410 Gone,
merge / JSON / strategic-merge patches, `scale` and `status` subresources, Table output for
`kubectl get`, OpenAPI for `kubectl apply`, and CRDs (ours and Karpenter's, validated against
their schemas). Lifecycles run on a `SimClock` with a speed factor: Deployment -> ReplicaSet ->
Pods, a GPU-aware scheduler with preemption of headroom pods, a kubelet running simulated vLLM
pods on their own 127.x addresses, EndpointSlices of Ready pods, and Karpenter NodePools
(static and dynamic) -> NodeClaims -> Nodes.

Modules: `cluster` (assembly, `start_cluster`), `server` (routing and verbs), `context`,
`scale` and `watchstream` (HTTP helpers, scale subresource, watch streams), `store`,
`resources`, `selectors`, `patches`, `protobuf`, `tables`, `discovery`, `openapi`, `admission`,
`validation`, `crds`, `workloads`, `scheduler`, `kubelet`, `endpoints`, `karpenter` and
`nodeclaims`, `events`, `clock`, `reconcile`, `gctune`, `faults` (injected API trouble);
`cli` and `bench` are the `surgescale sim cluster` and `surgescale bench cluster` commands.
See docs/sim-cluster.md.
"""

from .clock import SimClock
from .cluster import ClusterOptions, NodePoolConfig, RunningCluster, start_cluster

__all__ = ["ClusterOptions", "NodePoolConfig", "RunningCluster", "SimClock", "start_cluster"]
