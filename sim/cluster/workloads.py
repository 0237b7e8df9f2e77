"""Deployments -> ReplicaSets -> Pods, as the deployment and replicaset controllers do it.

A Deployment owns one ReplicaSet per pod-template hash (`<deploy>-<hash>`); changing the template
creates a new ReplicaSet and scales the old ones to zero at once (a Recreate-style roll, simpler
than RollingUpdate's surge accounting). A ReplicaSet creates pods named `<rs>-<5 chars>` with the
template's labels plus `pod-template-hash` and an ownerReference to it, and deletes surplus pods
in the real controller's order: unscheduled first, then Pending before Running, then not-Ready,
then the lowest `controller.kubernetes.io/pod-deletion-cost` (an int32 annotation; absent or
invalid counts as 0), then newest. Statuses (replicas, ready, available, updated,
observedGeneration, conditions) are written back as the real controllers do.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .admission import now_condition
from .events import EventSource
from .reconcile import Reconciler
from .resources import Registry
from .store import Obj, Store, WatchEvent, clone, random_suffix

_SAFE = "bcdfghjklmnpqrstvwxz2456789"
CREATE_BATCH = 50


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).digest()
    n = int.from_bytes(digest[:8], "big")
    out = []
    for _ in range(10):
        n, r = divmod(n, len(_SAFE))
        out.append(_SAFE[r])
    return "".join(out)


def owner_ref(owner: Obj) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_is_ready(pod: Obj) -> bool:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def controller_of(obj: Obj) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


class WorkloadControllers(EventSource):
    """The deployment and replicaset controllers over one store."""

    def __init__(self, registry: Registry, store: Store, admit: Any) -> None:
        self.store = store
        self.admit = admit
        self.deploy_rt = registry.require("apps", "v1", "deployments")
        self.rs_rt = registry.require("apps", "v1", "replicasets")
        self.pod_rt = registry.require("", "v1", "pods")
        self._alive: dict[tuple[str, str], set[tuple[str, str]]] = {}  # RS -> live pods
        self._ready: dict[tuple[str, str], set[tuple[str, str]]] = {}  # RS -> Ready pods
        self.deployments: Reconciler[tuple[str, str]] = Reconciler("deployments", self._sync_deploy)
        self.replicasets: Reconciler[tuple[str, str]] = Reconciler("replicasets", self._sync_rs)
        store.subscribe(self._on_event)

    def start(self) -> None:
        self.deployments.start()
        self.replicasets.start()

    async def stop(self) -> None:
        await self.deployments.stop()
        await self.replicasets.stop()

    def _on_event(self, ev: WatchEvent) -> None:
        meta = ev.obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if ev.rt.key == self.deploy_rt.key:
            self.deployments.mark(key)
        elif ev.rt.key == self.rs_rt.key:
            self.replicasets.mark(key)
            if ev.type == "DELETED":
                self._alive.pop(key, None)
                self._ready.pop(key, None)
            ref = controller_of(ev.obj)
            if ref and ref.get("kind") == "Deployment":
                self.deployments.mark((key[0], ref["name"]))
        elif ev.rt.key == self.pod_rt.key:
            ref = controller_of(ev.obj)
            if ref and ref.get("kind") == "ReplicaSet":
                rs_key = (key[0], ref["name"])
                alive = self._alive.setdefault(rs_key, set())
                ready = self._ready.setdefault(rs_key, set())
                if ev.type == "DELETED" or meta.get("deletionTimestamp"):
                    alive.discard(key)
                    ready.discard(key)
                else:
                    alive.add(key)
                    if pod_is_ready(ev.obj):
                        ready.add(key)
                    else:
                        ready.discard(key)
                self.replicasets.mark(rs_key)

    # ---- deployments ------------------------------------------------------------------------
    def _sync_deploy(self, key: tuple[str, str]) -> None:
        deploy = self.store.try_get(self.deploy_rt, *key)
        if deploy is None or deploy["metadata"].get("deletionTimestamp"):
            return
        spec = deploy["spec"]
        template = clone(spec.get("template") or {})
        h = template_hash(template)
        rs_name = f"{key[1]}-{h}"
        owned = [
            o
            for rt, o in self.store.dependents(deploy["metadata"]["uid"])
            if rt.key == self.rs_rt.key
        ]
        replicas = int(spec.get("replicas", 1))
        current = self.store.try_get(self.rs_rt, key[0], rs_name)
        if current is None:
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            selector = clone(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            rs = {
                "metadata": {
                    "name": rs_name,
                    "namespace": key[0],
                    "labels": {**(template["metadata"].get("labels") or {})},
                    "annotations": {"deployment.kubernetes.io/desired-replicas": str(replicas)},
                    "ownerReferences": [owner_ref(deploy)],
                },
                "spec": {"replicas": replicas, "selector": selector, "template": template},
            }
            current = self.store.create(self.rs_rt, rs)
            self._event(
                deploy,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {rs_name} to {replicas}",
                "deployment-controller",
            )
        elif current["spec"].get("replicas") != replicas:
            before = int(current["spec"].get("replicas", 0))
            new = clone(current)
            new["spec"]["replicas"] = replicas
            current = self.store.update(self.rs_rt, new)
            direction = "up" if replicas > before else "down"
            self._event(
                deploy,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {rs_name} from {before} to {replicas}",
                "deployment-controller",
            )
        for old in owned:
            if old["metadata"]["name"] != rs_name and old["spec"].get("replicas", 0) != 0:
                new = clone(old)
                new["spec"]["replicas"] = 0
                self.store.update(self.rs_rt, new)
        total = ready = updated = 0
        for each in [current] + [o for o in owned if o["metadata"]["name"] != rs_name]:
            st = each.get("status") or {}
            total += int(st.get("replicas", 0))
            ready += int(st.get("readyReplicas", 0))
            if each["metadata"]["name"] == rs_name:
                updated = int(st.get("replicas", 0))
        status: dict[str, Any] = {
            "observedGeneration": deploy["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, replicas - ready),
        }
        status = {k: v for k, v in status.items() if v or k == "observedGeneration"}
        available = ready >= replicas
        old_conds = {c["type"]: c for c in (deploy.get("status") or {}).get("conditions") or []}
        conds = []
        for type_, ok, reason, msg in (
            (
                "Available",
                available,
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            ),
            (
                "Progressing",
                True,
                "NewReplicaSetAvailable"
                if updated >= replicas and available
                else "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
            ),
        ):
            prev = old_conds.get(type_)
            want = "True" if ok else "False"
            if prev and prev.get("status") == want and prev.get("reason") == reason:
                conds.append(prev)
            else:
                conds.append(now_condition(type_, want, reason, msg))
        status["conditions"] = conds
        if deploy.get("status") != status:
            new = clone(deploy)
            new["status"] = status
            self.store.update(self.deploy_rt, new, check_rv=False)

    # ---- replicasets ------------------------------------------------------------------------
    def _sync_rs(self, key: tuple[str, str]) -> None:
        rs = self.store.try_get(self.rs_rt, *key)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        alive_keys = self._alive.setdefault(key, set())
        want = int(rs["spec"].get("replicas", 0))
        if len(alive_keys) < want:
            for _ in range(min(want - len(alive_keys), CREATE_BATCH)):
                self._create_pod(rs)  # its ADDED event puts it into alive_keys
            if len(alive_keys) < want:  # like the real controller, create in batches
                self.replicasets.mark(key)
        elif len(alive_keys) > want:
            alive = [p for p in (self.store.try_get(self.pod_rt, *k) for k in alive_keys) if p]

            def rank(p: Obj) -> tuple[int, int, int, int, str]:
                return (
                    1 if p.get("spec", {}).get("nodeName") else 0,
                    _PHASE_RANK.get((p.get("status") or {}).get("phase", ""), 1),
                    1 if pod_is_ready(p) else 0,
                    deletion_cost(p),
                    _neg(p["metadata"].get("creationTimestamp", "")),
                )

            alive.sort(key=rank)
            for pod in alive[: len(alive) - want]:
                self.store.delete(self.pod_rt, key[0], pod["metadata"]["name"])
                self._event(
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                    "replicaset-controller",
                )
        ready = len(self._ready.get(key, ()))
        status = {
            "replicas": len(alive_keys),
            "fullyLabeledReplicas": len(alive_keys),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
        if rs.get("status") != status:
            new = clone(rs)
            new["status"] = status
            self.store.update(self.rs_rt, new, check_rv=False)

    def _create_pod(self, rs: Obj) -> Obj:
        template = clone(rs["spec"].get("template") or {})
        tmeta = template.get("metadata") or {}
        ns = rs["metadata"]["namespace"]
        for _ in range(10):
            name = f"{rs['metadata']['name']}-{random_suffix(rng=self.store.rng)}"
            if self.store.try_get(self.pod_rt, ns, name) is None:
                break
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [owner_ref(rs)],
            },
            "spec": template.get("spec") or {},
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        self.admit(self.pod_rt, pod, None)
        created = self.store.create(self.pod_rt, pod)
        self._event(
            rs, "Normal", "SuccessfulCreate", f"Created pod: {name}", "replicaset-controller"
        )
        return created


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_INT32 = (-(2**31), 2**31 - 1)


def deletion_cost(pod: Obj) -> int:
    """The pod's `pod-deletion-cost` annotation; 0 when absent or not an int32 (the ReplicaSet
    controller treats a value it cannot parse as 0)."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST)
    if not isinstance(raw, str):
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        return 0
    return value if _INT32[0] <= value <= _INT32[1] else 0


def _neg(ts: str) -> str:
    """Sort key that puts newer timestamps first."""
    return "".join(chr(0x10FFFF - ord(c)) for c in ts)
