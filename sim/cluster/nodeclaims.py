"""NodeClaim lifecycle for the simulated Karpenter: launch, boot, and graceful termination.

A new NodeClaim is Launched and Registered at once and its Node appears NotReady (labels from
the claim plus the usual well-known ones, `nvidia.com/gpu` capacity, an InternalIP in
127.254.0.0/16); after the boot time (sim clock) the Node turns Ready and the claim Initialized
and Ready. Deleting a claim (it carries the `karpenter.sh/termination` finalizer) cordons and
taints its Node, evicts the pods gracefully, waits until they are gone, deletes the Node and
drops the finalizer. Mixed into `karpenter.Karpenter`, which owns the shared state.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .admission import now_condition
from .clock import SimClock, timestamp
from .events import EventSource
from .scheduler import GPU
from .store import Obj, Store, clone
from .workloads import owner_ref

POOL_LABEL = "karpenter.sh/nodepool"
FINALIZER = "karpenter.sh/termination"


class NodeClaimLifecycle(EventSource):
    store: Store
    clock: SimClock
    default_gpus: int
    default_boot_s: float
    pod_rt: Any
    node_rt: Any
    _node_seq: int
    _booting: set[str]
    _terminating: set[str]
    _empty_since: dict[str, float]
    _drained: dict[str, asyncio.Event]

    @property
    def claim_rt(self) -> Any:
        raise NotImplementedError

    def _pods_on(self, node_name: str) -> list[Obj]:
        raise NotImplementedError

    async def _launch(self, name: str) -> None:
        claim = self.store.try_get(self.claim_rt, "", name)
        if claim is None:
            return
        ann = claim["metadata"].get("annotations") or {}
        gpus = int(ann.get("surgescale.io/gpus-per-node", self.default_gpus))
        boot = float(ann.get("surgescale.io/boot-seconds", self.default_boot_s))
        capacity = {
            "cpu": "64",
            "memory": "512Gi",
            "pods": "110",
            "ephemeral-storage": "1Ti",
            GPU: str(gpus),
        }
        self._node_seq += 1
        seq = self._node_seq
        labels = {
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "nvidia.com/gpu.count": str(gpus),
            **(claim["metadata"].get("labels") or {}),
            "kubernetes.io/hostname": name,
            "karpenter.sh/registered": "true",
        }
        node = {
            "metadata": {
                "name": name,
                "labels": labels,
                "ownerReferences": [{**owner_ref(claim), "controller": False}],
            },
            "spec": {
                "providerID": f"kwok://{name}",
                **({"taints": claim["spec"]["taints"]} if claim["spec"].get("taints") else {}),
            },
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {
                        "type": "InternalIP",
                        "address": f"127.254.{seq // 250 % 250}.{seq % 250 + 1}",
                    },
                    {"type": "Hostname", "address": name},
                ],
                "conditions": [
                    now_condition("Ready", "False", "KubeletNotReady", "node is booting")
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.32.0-sim",
                    "osImage": "surgescale sim",
                    "containerRuntimeVersion": "sim://1",
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kernelVersion": "6.1.0",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            },
        }
        self.store.create(self.node_rt, node)

        def launched(c: Obj) -> None:
            c["status"] = {
                "providerID": f"kwok://{name}",
                "nodeName": name,
                "imageID": "sim-image",
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [
                    now_condition("Launched", "True", "Launched"),
                    now_condition("Registered", "True", "Registered"),
                    now_condition("Initialized", "Unknown", "AwaitingReconciliation"),
                    now_condition("Ready", "Unknown", "AwaitingReconciliation"),
                ],
            }

        self._patch_claim(name, launched)
        self._booting.add(name)
        try:
            await self.clock.sleep(boot)
        finally:
            self._booting.discard(name)
        claim = self.store.try_get(self.claim_rt, "", name)
        node_obj = self.store.try_get(self.node_rt, "", name)
        if claim is None or claim["metadata"].get("deletionTimestamp") or node_obj is None:
            return
        new_node = clone(node_obj)
        new_node["status"]["conditions"] = [
            now_condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        ]
        new_node["metadata"]["labels"]["karpenter.sh/initialized"] = "true"
        ready_node = self.store.update(self.node_rt, new_node, check_rv=False)
        self._event(
            ready_node, "Normal", "NodeReady", f"Node {name} status is now: NodeReady", "kubelet"
        )

        def ready(c: Obj) -> None:
            conds = [
                x
                for x in c["status"].get("conditions") or []
                if x["type"] not in ("Initialized", "Ready")
            ]
            conds += [
                now_condition("Initialized", "True", "Initialized"),
                now_condition("Ready", "True", "Ready"),
            ]
            c["status"]["conditions"] = conds

        self._patch_claim(name, ready)

    def _patch_claim(self, name: str, mutate: Any) -> None:
        claim = self.store.try_get(self.claim_rt, "", name)
        if claim is None:
            return
        new = clone(claim)
        new.setdefault("status", {})
        mutate(new)
        self.store.update(self.claim_rt, new, check_rv=False)

    async def _terminate(self, name: str) -> None:
        try:
            node = self.store.try_get(self.node_rt, "", name)
            if node is not None:
                cordoned = clone(node)
                cordoned["spec"]["unschedulable"] = True
                taints = [
                    t
                    for t in cordoned["spec"].get("taints") or []
                    if t.get("key") != "karpenter.sh/disrupted"
                ]
                taints.append(
                    {
                        "key": "karpenter.sh/disrupted",
                        "effect": "NoSchedule",
                        "timeAdded": timestamp(),
                    }
                )
                cordoned["spec"]["taints"] = taints
                self.store.update(self.node_rt, cordoned, check_rv=False)
                for pod in self._pods_on(name):
                    meta = pod["metadata"]
                    with contextlib.suppress(Exception):
                        self.store.delete(self.pod_rt, meta["namespace"], meta["name"])
                while self._pods_on(name):
                    drained = self._drained.setdefault(name, asyncio.Event())
                    await drained.wait()
                    drained.clear()
                with contextlib.suppress(Exception):
                    self.store.delete(self.node_rt, "", name)
            claim = self.store.try_get(self.claim_rt, "", name)
            if claim is not None:
                new = clone(claim)
                new["metadata"]["finalizers"] = [
                    f for f in new["metadata"].get("finalizers") or [] if f != FINALIZER
                ]
                self.store.update(self.claim_rt, new, check_rv=False)
        finally:
            self._terminating.discard(name)
            self._drained.pop(name, None)
            self._empty_since.pop(name, None)
