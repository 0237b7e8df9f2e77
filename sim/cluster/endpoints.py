"""The EndpointSlice controller: one slice per Service listing its Ready pods.

The slice is named `<service>-<5 chars>`, labelled `kubernetes.io/service-name` and
`endpointslice.kubernetes.io/managed-by`, owned by the Service, with the Service's ports
(target ports, as real slices carry) and one endpoint per Ready pod matching the Service's
selector (address = pod IP, `nodeName`, `targetRef`). A pod marked for deletion stays listed as
Kubernetes lists it, `terminating: true` and `ready: false` (`serving` following its readiness),
until it is gone from the API; clients stop sending it new work at once while its in-flight
requests finish. (Not-ready pods that are not terminating are left out, a simplification.)
"""

from __future__ import annotations

from typing import Any

from .reconcile import Reconciler
from .resources import Registry
from .selectors import LabelSelector
from .store import Obj, Store, WatchEvent, clone, random_suffix
from .workloads import owner_ref, pod_is_ready

MANAGED_BY = "endpointslice-controller.k8s.io"


class EndpointSliceController:
    def __init__(self, registry: Registry, store: Store) -> None:
        self.store = store
        self.svc_rt = registry.require("", "v1", "services")
        self.pod_rt = registry.require("", "v1", "pods")
        self.slice_rt = registry.require("discovery.k8s.io", "v1", "endpointslices")
        self.reconciler: Reconciler[tuple[str, str]] = Reconciler("endpointslices", self._sync)
        self._services_by_ns: dict[str, set[str]] = {}
        store.subscribe(self._on_event)

    def start(self) -> None:
        self.reconciler.start()

    async def stop(self) -> None:
        await self.reconciler.stop()

    def _on_event(self, ev: WatchEvent) -> None:
        meta = ev.obj["metadata"]
        ns = meta.get("namespace", "")
        if ev.rt.key == self.svc_rt.key:
            names = self._services_by_ns.setdefault(ns, set())
            if ev.type == "DELETED":
                names.discard(meta["name"])
            else:
                names.add(meta["name"])
                self.reconciler.mark((ns, meta["name"]))
        elif ev.rt.key == self.pod_rt.key and ev.obj.get("status", {}).get("podIP"):
            for name in self._services_by_ns.get(ns, ()):
                self.reconciler.mark((ns, name))

    def _sync(self, key: tuple[str, str]) -> None:
        svc = self.store.try_get(self.svc_rt, *key)
        if svc is None:
            return
        selector = svc.get("spec", {}).get("selector")
        if not selector:
            return  # a Service without selector has its slices managed by someone else
        sel = LabelSelector.from_map(selector)
        endpoints: list[dict[str, Any]] = []
        for pod in self.store.items(self.pod_rt):
            pmeta = pod["metadata"]
            if pmeta.get("namespace") != key[0]:
                continue
            ip = pod.get("status", {}).get("podIP")
            terminating = bool(pmeta.get("deletionTimestamp"))
            serving = pod_is_ready(pod)
            if not ip or not sel.matches(pmeta.get("labels")):
                continue
            if not serving and not terminating:
                continue
            endpoints.append(
                {
                    "addresses": [ip],
                    # As Kubernetes reports them: a terminating endpoint is never `ready`;
                    # `serving` still follows the pod's readiness.
                    "conditions": {
                        "ready": serving and not terminating,
                        "serving": serving,
                        "terminating": terminating,
                    },
                    "nodeName": pod["spec"].get("nodeName"),
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": key[0],
                        "name": pmeta["name"],
                        "uid": pmeta.get("uid"),
                    },
                }
            )
        endpoints.sort(key=lambda e: str(e["targetRef"]["name"]))
        ports = []
        for p in svc.get("spec", {}).get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            port: dict[str, Any] = {
                "name": p.get("name", ""),
                "protocol": p.get("protocol", "TCP"),
                "port": target if isinstance(target, int) else p.get("port"),
            }
            ports.append(port)
        existing = self._slice_for(svc)
        if existing is None:
            for _ in range(10):
                name = f"{key[1]}-{random_suffix(rng=self.store.rng)}"
                if self.store.try_get(self.slice_rt, key[0], name) is None:
                    break
            self.store.create(
                self.slice_rt,
                {
                    "metadata": {
                        "name": name,
                        "namespace": key[0],
                        "labels": {
                            "kubernetes.io/service-name": key[1],
                            "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                        },
                        "ownerReferences": [owner_ref(svc)],
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": ports,
                },
            )
        elif existing.get("endpoints") != endpoints or existing.get("ports") != ports:
            new = clone(existing)
            new["endpoints"] = endpoints
            new["ports"] = ports
            self.store.update(self.slice_rt, new, check_rv=False)

    def _slice_for(self, svc: Obj) -> Obj | None:
        for rt, obj in self.store.dependents(svc["metadata"]["uid"]):
            if rt.key == self.slice_rt.key:
                return dict(obj)
        return None
