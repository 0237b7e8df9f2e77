"""Watch the cluster the way a dashboard would: the model's Deployment, its pods, the GPU NodePool
and its nodes (and the InferenceScaler's status), through kubernetes_asyncio list + watch.

`ClusterObserver` keeps one informer per kind (list, then watch from the list's resourceVersion;
on any error or expiry, list again), holds the objects as plain dicts, and after every change
derives a `ClusterSample` and the scale changes and Ready transitions the report needs. Times are
seconds since `t0` on the event loop's clock, stamped when the watch event arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch

from sim.demo.record import ClusterSample, ScaleChange

log = logging.getLogger(__name__)

Obj = dict[str, Any]

KARPENTER = ("karpenter.sh", "v1", "nodepools")
NODECLAIMS = ("karpenter.sh", "v1", "nodeclaims")
POOL_LABEL = "karpenter.sh/nodepool"
SCALER = ("surgescale.io", "v1alpha1", "inferencescalers")


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedNames:
    namespace: str
    deployment: str
    pod_selector: str
    """Label selector of the model's pods, e.g. `app=llama3-8b`."""
    nodepool: str
    scaler: str | None = None
    """Name of the InferenceScaler to follow (None with the baseline)."""


def _label(obj: Obj, key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(key)
    return None if value is None else str(value)


def _is_ready(obj: Obj) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


@dataclass(slots=True)
class ClusterObserver:
    """Informers for the objects of one demo run, and what they add up to."""

    api: k8s.ApiClient
    names: ObservedNames
    t0: float
    now: Callable[[], float] = field(default_factory=lambda: asyncio.get_running_loop().time)
    deployments: dict[str, Obj] = field(default_factory=dict)
    pods: dict[str, Obj] = field(default_factory=dict)
    nodepools: dict[str, Obj] = field(default_factory=dict)
    nodes: dict[str, Obj] = field(default_factory=dict)
    nodeclaims: dict[str, Obj] = field(default_factory=dict)
    scalers: dict[str, Obj] = field(default_factory=dict)
    samples: list[ClusterSample] = field(default_factory=list)
    changes: list[ScaleChange] = field(default_factory=list)
    pod_ready_at: list[float] = field(default_factory=list)
    node_ready_at: list[float] = field(default_factory=list)
    _ready_pods: set[str] = field(default_factory=set)
    _ready_nodes: set[str] = field(default_factory=set)
    _last_desired: dict[str, int] = field(default_factory=dict)
    _synced: set[str] = field(default_factory=set)
    _recording: bool = False
    _unexplained: list[int] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reason_of: Callable[[str], str] | None = None
    """Gives the reason of a scale change when the observer cannot read it from the cluster."""

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start the informers and wait until each has listed once."""
        core = k8s.CoreV1Api(self.api)
        apps = k8s.AppsV1Api(self.api)
        custom = k8s.CustomObjectsApi(self.api)
        ns = self.names.namespace
        specs: list[tuple[str, dict[str, Obj], Callable[..., Awaitable[Any]], dict[str, Any]]] = [
            ("deployments", self.deployments, apps.list_namespaced_deployment, {"namespace": ns}),
            (
                "pods",
                self.pods,
                core.list_namespaced_pod,
                {"namespace": ns, "label_selector": self.names.pod_selector},
            ),
            ("nodes", self.nodes, core.list_node, {}),
            (
                "nodepools",
                self.nodepools,
                custom.list_cluster_custom_object,
                {"group": KARPENTER[0], "version": KARPENTER[1], "plural": KARPENTER[2]},
            ),
            (
                "nodeclaims",
                self.nodeclaims,
                custom.list_cluster_custom_object,
                {"group": NODECLAIMS[0], "version": NODECLAIMS[1], "plural": NODECLAIMS[2]},
            ),
        ]
        if self.names.scaler is not None:
            specs.append(
                (
                    "scalers",
                    self.scalers,
                    custom.list_namespaced_custom_object,
                    {
                        "group": SCALER[0],
                        "version": SCALER[1],
                        "namespace": ns,
                        "plural": SCALER[2],
                    },
                )
            )
        for kind, store, fn, kwargs in specs:
            self._tasks.append(
                asyncio.create_task(self._inform(kind, store, fn, kwargs), name=f"watch-{kind}")
            )
        deadline = self.now() + timeout_s
        while len(self._synced) < len(specs):
            if self.now() > deadline:
                missing = sorted({s[0] for s in specs} - self._synced)
                raise TimeoutError(f"could not list {', '.join(missing)} from the API server")
            await asyncio.sleep(0.02)
        self._update()  # what exists now is the starting point, not a change
        self.samples[:] = self.samples[-1:]
        self._recording = True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # --- informers ---------------------------------------------------------------------------

    def _to_dict(self, obj: Any) -> Obj:
        if isinstance(obj, dict):
            return obj
        out: Obj = self.api.sanitize_for_serialization(obj)
        return out

    async def _inform(
        self,
        kind: str,
        store: dict[str, Obj],
        list_fn: Callable[..., Awaitable[Any]],
        kwargs: dict[str, Any],
    ) -> None:
        while True:
            try:
                listing = self._to_dict(await list_fn(**kwargs))
                store.clear()
                for item in listing.get("items") or []:
                    store[item["metadata"]["name"]] = item
                self._synced.add(kind)
                self._update()
                version = (listing.get("metadata") or {}).get("resourceVersion")
                w = watch.Watch()
                async with w:
                    async for event in w.stream(
                        list_fn, resource_version=version, timeout_seconds=300, **kwargs
                    ):
                        obj = self._to_dict(event["object"])
                        kind_of_event = event["type"]
                        if kind_of_event == "ERROR":
                            break
                        name = obj.get("metadata", {}).get("name")
                        if not name:
                            continue
                        if kind_of_event == "DELETED":
                            store.pop(name, None)
                        else:
                            store[name] = obj
                        self._update()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("watch of %s ended (%s); listing again", kind, exc)
                await asyncio.sleep(0.2)

    # --- derived state ------------------------------------------------------------------------

    def t(self) -> float:
        return self.now() - self.t0

    def _desired(self, target: str, value: int) -> None:
        old = self._last_desired.get(target)
        self._last_desired[target] = value
        if self._recording and old is not None and old != value:
            if self.reason_of is not None:
                reason = self.reason_of(target)
            else:  # the scaler's status follows the PATCH (throttled): filled in when it does
                reason = ""
                self._unexplained.append(len(self.changes))
            self.changes.append(
                ScaleChange(t=self.t(), target=target, old=old, new=value, reason=reason)
            )
            if self.reason_of is None:
                self._explain()

    def _explain(self) -> None:
        """Give waiting changes the scaler's reason once its status shows their new size."""
        status = self.scaler_status()
        reason = str(status.get("lastScaleReason") or "")
        if not reason:
            return
        shown = {"replicas": status.get("desiredReplicas"), "nodes": status.get("desiredNodes")}
        still: list[int] = []
        for index in self._unexplained:
            change = self.changes[index]
            if shown.get(change.target) == change.new:
                self.changes[index] = replace(change, reason=reason)
            else:
                still.append(index)
        self._unexplained[:] = still

    def scaler_status(self) -> Obj:
        if self.names.scaler is None:
            return {}
        obj = self.scalers.get(self.names.scaler) or {}
        status: Obj = obj.get("status") or {}
        return status

    def scaler_reason(self) -> str:
        return str(self.scaler_status().get("lastScaleReason") or "")

    def current(self) -> ClusterSample:
        now = self.t()
        dep = self.deployments.get(self.names.deployment) or {}
        desired = int((dep.get("spec") or {}).get("replicas") or 0)
        ready = starting = 0
        for pod in self.pods.values():
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            if _is_ready(pod):
                ready += 1
            else:
                starting += 1
        pool = self.nodepools.get(self.names.nodepool) or {}
        replicas = (pool.get("spec") or {}).get("replicas")
        if replicas is not None:
            nodes_desired = int(replicas)
        else:  # a dynamic pool: what Karpenter has claimed
            nodes_desired = sum(
                1
                for c in self.nodeclaims.values()
                if _label(c, POOL_LABEL) == self.names.nodepool
                and not (c.get("metadata") or {}).get("deletionTimestamp")
            )
        nodes_ready = sum(1 for n in self._pool_nodes() if _is_ready(n))
        return ClusterSample(
            t=now,
            replicas_desired=desired,
            replicas_starting=starting,
            replicas_ready=ready,
            nodes_desired=nodes_desired,
            nodes_ready=nodes_ready,
        )

    def _pool_nodes(self) -> list[Obj]:
        return [n for n in self.nodes.values() if _label(n, POOL_LABEL) == self.names.nodepool]

    def _update(self) -> None:
        if self._unexplained:
            self._explain()
        sample = self.current()
        self._desired("replicas", sample.replicas_desired)
        if self.names.nodepool in self.nodepools:
            self._desired("nodes", sample.nodes_desired)
        for name, pod in self.pods.items():
            if _is_ready(pod) and name not in self._ready_pods:
                self._ready_pods.add(name)
                if self._recording:
                    self.pod_ready_at.append(sample.t)
        for node in self._pool_nodes():
            name = node["metadata"]["name"]
            if _is_ready(node) and name not in self._ready_nodes:
                self._ready_nodes.add(name)
                if self._recording:
                    self.node_ready_at.append(sample.t)
        last = self.samples[-1] if self.samples else None
        if last is None or (
            (
                last.replicas_desired,
                last.replicas_starting,
                last.replicas_ready,
                last.nodes_desired,
                last.nodes_ready,
            )
            != (
                sample.replicas_desired,
                sample.replicas_starting,
                sample.replicas_ready,
                sample.nodes_desired,
                sample.nodes_ready,
            )
        ):
            self.samples.append(sample)
        self.changed.set()
