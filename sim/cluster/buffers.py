"""CapacityBuffers (`autoscaling.x-k8s.io`), simulated: the chunks Karpenter keeps room for.

A CapacityBuffer asks the node autoscaler to keep capacity for `replicas` chunks shaped like a
pod, as if that many pods were pending, without running any (the upstream API for warm headroom;
the real CRD is served from `sim/data/karpenter-aws-crds/`). This module does what the buffer
controller and the node autoscaler's buffer support do together:

* resolves each buffer: the chunk's pod from `spec.podTemplateRef` (a core/v1 PodTemplate) or
  `spec.scalableRef` (a Deployment's pod template); the count from `spec.replicas`, and with a
  `scalableRef` from `spec.percentage` of its replicas (rounded up, at least 1; the smaller of the
  two when both are set). A buffer with only `limits` gets no chunks here (documented limit);
* writes its status: `replicas`, `podTemplateRef`, `provisioningStrategy` and the
  `ReadyForProvisioning` condition (False with the reason when the template is missing), and
  the `Provisioning` condition that Karpenter reports back (`report`);
* hands Karpenter the chunks (`chunks()`, virtual pods: the GPU count and the pod to match pools
  with) and wakes its provisioner when a buffer changes (`on_change`).

Karpenter (`sim.cluster.karpenter`) launches NodeClaims until the chunks fit beside the pods
already bound, and does not consolidate a node the chunks need. Real pods schedule onto that room
at once: there is nothing to preempt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .admission import now_condition
from .reconcile import Reconciler
from .resources import Registry, ResourceType
from .scheduler import pod_gpus
from .store import Obj, Store, WatchEvent, clone

GROUP = "autoscaling.x-k8s.io"
PLURAL = "capacitybuffers"
ACTIVE_CAPACITY = "buffer.x-k8s.io/active-capacity"


@dataclass(frozen=True, slots=True)
class Chunks:
    """One buffer's demand: `count` virtual pods of `gpus` GPUs each, shaped like `pod`."""

    namespace: str
    name: str
    count: int
    gpus: int
    pod: Obj


class CapacityBuffers:
    """Resolves CapacityBuffers into chunks and writes their status (see the module docstring)."""

    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self.template_rt = registry.require("", "v1", "podtemplates")
        self.deploy_rt = registry.require("apps", "v1", "deployments")
        self.reconciler: Reconciler[tuple[str, str]] = Reconciler(PLURAL, self._sync)
        self._resolved: dict[tuple[str, str], Chunks] = {}
        self.on_change: Callable[[], None] | None = None
        store.subscribe(self._on_event)

    @property
    def rt(self) -> ResourceType | None:
        """The served CapacityBuffer type, or None when the CRD is not installed."""
        for version in ("v1beta1", "v1alpha1", "v1"):
            rt = self.registry.get(GROUP, version, PLURAL)
            if rt is not None:
                return rt
        return None

    def start(self) -> None:
        self.reconciler.start()

    async def stop(self) -> None:
        await self.reconciler.stop()

    def chunks(self) -> list[Chunks]:
        """Every resolved buffer's chunks (none when the CRD is not installed)."""
        return [c for c in self._resolved.values() if c.count > 0 and c.gpus > 0]

    def _on_event(self, ev: WatchEvent) -> None:
        rt = self.rt
        if rt is not None and ev.rt.key == rt.key:
            meta = ev.obj["metadata"]
            self.reconciler.mark((meta.get("namespace") or "", meta["name"]))
        elif ev.rt.key in (self.template_rt.key, self.deploy_rt.key) and self._resolved:
            ns = ev.obj["metadata"].get("namespace") or ""
            for key in [k for k in self._resolved if k[0] == ns]:
                self.reconciler.mark(key)  # a template or a scalable target changed
        elif (
            ev.rt.key.startswith("customresourcedefinitions.")
            and ev.type == "DELETED"
            and self.rt is None
            and self._resolved
        ):
            self._resolved.clear()
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _sync(self, key: tuple[str, str]) -> None:
        rt = self.rt
        obj = None if rt is None else self.store.try_get(rt, *key)
        if rt is None or obj is None or obj["metadata"].get("deletionTimestamp"):
            if self._resolved.pop(key, None) is not None:
                self._changed()
            return
        spec = obj.get("spec") or {}
        pod, template_name, problem = self._chunk_pod(key[0], spec)
        count = 0 if pod is None else self._count(key[0], spec)
        chunks = Chunks(key[0], key[1], count, 0 if pod is None else pod_gpus(pod), pod or {})
        if self._resolved.get(key) != chunks:
            self._resolved[key] = chunks
            self._changed()
        status = dict(obj.get("status") or {})
        status["replicas"] = count
        status["provisioningStrategy"] = spec.get("provisioningStrategy") or ACTIVE_CAPACITY
        if template_name:
            status["podTemplateRef"] = {"name": template_name}
        ready = (
            now_condition("ReadyForProvisioning", "True", "BufferResolved", f"{count} chunk(s)")
            if problem is None
            else now_condition("ReadyForProvisioning", "False", *problem)
        )
        status["conditions"] = _merge(status.get("conditions") or [], ready)
        self._write_status(rt, obj, status)

    def report(self, key: tuple[str, str], *, fit: int, wanted: int, launching: bool) -> None:
        """Karpenter's word on one buffer: `fit` of `wanted` chunks have room on Ready nodes."""
        rt = self.rt
        obj = None if rt is None else self.store.try_get(rt, *key)
        if rt is None or obj is None:
            return
        if fit >= wanted:
            cond = now_condition("Provisioning", "True", "CapacityReady", f"{wanted} chunk(s) fit")
        elif launching:
            message = f"{fit} of {wanted} chunk(s) fit; nodes are launching"
            cond = now_condition("Provisioning", "True", "NodesLaunching", message)
        else:
            message = f"{fit} of {wanted} chunk(s) fit; no NodePool can launch more (limits)"
            cond = now_condition("Provisioning", "False", "LimitReached", message)
        status = dict(obj.get("status") or {})
        status["conditions"] = _merge(status.get("conditions") or [], cond)
        self._write_status(rt, obj, status)

    def _write_status(self, rt: ResourceType, obj: Obj, status: dict[str, Any]) -> None:
        if status != (obj.get("status") or {}):
            new = clone(obj)
            new["status"] = status
            self.store.update(rt, new, check_rv=False)

    def _chunk_pod(
        self, namespace: str, spec: dict[str, Any]
    ) -> tuple[Obj | None, str, tuple[str, str] | None]:
        """(the chunk's pod, the template's name, or (reason, message) why there is none)."""
        ref = spec.get("podTemplateRef") or {}
        if ref.get("name"):
            tmpl = self.store.try_get(self.template_rt, namespace, ref["name"])
            if tmpl is None:
                return None, "", ("PodTemplateNotFound", f"PodTemplate {ref['name']} not found")
            return dict(tmpl.get("template") or {}), ref["name"], None
        scalable = spec.get("scalableRef") or {}
        if scalable.get("name"):
            if scalable.get("kind") != "Deployment":
                message = f"scalableRef kind {scalable.get('kind')!r} is not simulated"
                return None, "", ("UnsupportedScalableRef", message)
            dep = self.store.try_get(self.deploy_rt, namespace, scalable["name"])
            if dep is None:
                return None, "", ("ScalableRefNotFound", f"Deployment {scalable['name']} not found")
            return dict(dep["spec"].get("template") or {}), "", None
        return None, "", ("NoTemplate", "neither podTemplateRef nor scalableRef is set")

    def _count(self, namespace: str, spec: dict[str, Any]) -> int:
        counts = []
        if spec.get("replicas") is not None:
            counts.append(max(int(spec["replicas"]), 0))
        scalable = spec.get("scalableRef") or {}
        if spec.get("percentage") is not None and scalable.get("name"):
            dep = self.store.try_get(self.deploy_rt, namespace, scalable["name"])
            current = int(((dep or {}).get("spec") or {}).get("replicas") or 0)
            counts.append(max(math.ceil(current * int(spec["percentage"]) / 100), 1))
        return min(counts) if counts else 0


def _merge(conditions: list[Obj], new: Obj) -> list[Obj]:
    """Replace the condition of `new`'s type, keeping its transition time if the status holds."""
    out = []
    for cond in conditions:
        if cond.get("type") != new["type"]:
            out.append(cond)
            continue
        if (cond.get("status"), cond.get("reason"), cond.get("message")) == (
            new["status"],
            new["reason"],
            new["message"],
        ):
            new = cond
        elif cond.get("status") == new["status"]:
            new = {**new, "lastTransitionTime": cond.get("lastTransitionTime")}
    out.append(new)
    return sorted(out, key=lambda c: str(c.get("type")))
