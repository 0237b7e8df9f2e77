"""The cluster counts of a scaler's targets, computed again only when their objects change.

The controller reads a scaler's ready / starting replicas (`controller.scaler.cluster_counts`)
on every evaluation and, for every model, on every tick's sampling step (`Controller._sample`):
at 1,000 models and the bench's 50 ms tick that is 20,000 reads a second, and the read (two
`ScaleTarget`s built, the Deployment looked up, its status parsed, a `ClusterCounts` built) was
about half the sampling step's CPU (docs/scale-out.md, "Fifth round").

For a scaler without a NodePool target the counts depend only on its spec and its Deployment
object; the informer replaces an object when it changes (nothing edits one in place), so the
counts computed from the same spec and the same Deployment object are still right. `CountsCache`
keeps them per scaler and checks both identities on every read. Scalers with a NodePool target
(whose node counts come from every Node) are computed on every read, as before. An entry is
kept per scaler key (a deleted scaler's until a scaler of that name comes back: one small entry
each).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from controller.actuator import TargetKind
from controller.objects import Deployment, Node, NodePool
from controller.scaler import Key, Scaler, cluster_counts
from controller.state import ClusterCounts


class _Entry(NamedTuple):
    scaler: Scaler
    spec: object
    dep_key: Key
    deployment: Deployment
    counts: ClusterCounts | None


class CountsCache:
    """`cluster_counts`, remembered per scaler while its spec and Deployment object stay."""

    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}
        self.computed = 0
        """How many times the counts were computed (not taken from the cache)."""

    def counts(
        self,
        scaler: Scaler,
        *,
        deployments: Mapping[Key, Deployment],
        nodes: Iterable[Node],
        pools: Mapping[Key, NodePool],
    ) -> ClusterCounts | None:
        """`controller.scaler.cluster_counts(scaler, ...)`, from the cache when it still holds."""
        entry = self._entries.get(scaler.key)
        if (
            entry is not None
            and entry.scaler is scaler
            and entry.spec is scaler.spec
            and deployments.get(entry.dep_key) is entry.deployment
        ):
            return entry.counts
        self.computed += 1
        counts = cluster_counts(scaler, deployments=deployments, nodes=nodes, pools=pools)
        target = scaler.deployment()
        node_target = scaler.node_target()
        dep_key = None if target is None else (target.namespace, target.name)
        dep = None if dep_key is None else deployments.get(dep_key)
        if (
            dep_key is None
            or dep is None
            or (node_target is not None and node_target.kind is TargetKind.NODEPOOL)
        ):
            self._entries.pop(scaler.key, None)  # not cached: computed on every read
        else:
            self._entries[scaler.key] = _Entry(scaler, scaler.spec, dep_key, dep, counts)
        return counts
