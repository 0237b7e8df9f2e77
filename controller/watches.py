"""Watches in: InferenceScalers, Deployments and Nodes/NodePools as the informers report them.

`Watches` keeps the InferenceScalers this controller runs (`scalers`, parsed spec or the error that
made it invalid) and the indexes by model and by scale target (`reindex`). A changed scaler or
Deployment asks for an evaluation (`request(scaler)`); the replicas a Deployment or NodePool has
are handed to `observed(target, replicas)` (the actuator's view of what the cluster has).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controller import crd
from controller.actuator import ScaleTarget, TargetKind
from controller.kube import Informer
from controller.objects import Deployment, InferenceScalerObject, Node, NodePool
from controller.scaler import Key, Scaler

log = logging.getLogger(__name__)


class Watches:
    """The informers' handlers and the scalers they maintain."""

    def __init__(
        self,
        *,
        request: Callable[[Scaler], None],
        observed: Callable[[ScaleTarget, int], None],
        reindexed: Callable[[int], None],
    ) -> None:
        self._request = request
        self._observed = observed
        self._reindexed = reindexed
        """Told the number of scalers after every change (the evaluation budget)."""
        self.scalers: dict[Key, Scaler] = {}
        self.by_model: dict[str, list[Scaler]] = {}
        self.by_target: dict[ScaleTarget, Scaler] = {}

    def on_scaler(self, kind: str, obj: InferenceScalerObject) -> None:
        if kind == "SYNC":
            return
        key = Informer.key(obj)
        if kind == "DELETED":
            gone = self.scalers.pop(key, None)
            if gone is not None:
                gone.gate.cancel()
            self.reindex()
            return
        meta = obj.get("metadata") or {}
        scaler = self.scalers.get(key) or Scaler(key=key)
        self.scalers[key] = scaler
        scaler.uid = meta.get("uid")
        generation = int(meta.get("generation") or 0)
        if generation == scaler.generation and (scaler.spec or scaler.error):
            return  # same spec (e.g. a status write of ours came back)
        scaler.generation = generation
        try:
            spec = crd.parse_spec(obj.get("spec"))
        except crd.SpecError as exc:
            scaler.spec, scaler.policy_spec, scaler.error = None, None, exc
            scaler.set_condition("SpecValid", False, "InvalidSpec", str(exc))
            log.warning("InferenceScaler %s is invalid: %s", scaler.name, exc)
        else:
            scaler.spec, scaler.error = spec, None
            scaler.policy_spec = crd.to_policy_spec(spec)
            scaler.set_condition("SpecValid", True, "Valid", "spec accepted")
        self.reindex()
        self._request(scaler)

    def reindex(self) -> None:
        self._reindexed(len(self.scalers))
        self.by_model = {}
        self.by_target = {}
        for scaler in self.scalers.values():
            if scaler.model is None:
                continue
            self.by_model.setdefault(scaler.model, []).append(scaler)
            for target in (scaler.deployment(), scaler.node_target()):
                if target is not None:
                    self.by_target[target] = scaler

    def on_deployment(self, kind: str, obj: Deployment) -> None:
        if kind == "SYNC":
            for each in self.scalers.values():
                self._request(each)
            return
        ns, name = Informer.key(obj)
        target = ScaleTarget(TargetKind.DEPLOYMENT, name, ns)
        scaler = self.by_target.get(target)
        if scaler is None or kind == "DELETED":
            return
        replicas = (obj.get("spec") or {}).get("replicas")
        if isinstance(replicas, int):
            self._observed(target, replicas)
        self._request(scaler)

    def on_nodes(self, kind: str, obj: Node | NodePool) -> None:
        if kind == "SYNC":
            return
        if obj.get("kind") == "NodePool":
            replicas = (obj.get("spec") or {}).get("replicas")
            name = (obj.get("metadata") or {}).get("name") or ""
            if isinstance(replicas, int):
                self._observed(ScaleTarget(TargetKind.NODEPOOL, name), replicas)
