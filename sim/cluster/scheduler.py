"""The scheduler: binds Pending pods to Ready nodes with free `nvidia.com/gpu`, preempting
lower-priority pods (headroom placeholders) when a higher-priority pod cannot fit.

Each pass takes all unbound pods, highest priority first, and picks the feasible node with the
most GPUs already allocated (bin packing, so Karpenter can consolidate empty nodes). A node is
feasible when it is Ready, schedulable, its labels match the pod's `nodeSelector`, the pod
tolerates its NoSchedule/NoExecute taints and the GPUs fit (terminating pods still hold theirs).
A pod that fits nowhere gets `PodScheduled=False, reason Unschedulable` (what Karpenter watches
for); if evicting lower-priority pods on one node would make room, those are deleted and the
pod is nominated to that node (`status.nominatedNodeName`), as kube-scheduler's preemption does.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

import orjson

from .admission import now_condition
from .events import EventSource
from .reconcile import Reconciler
from .resources import Registry
from .store import Obj, Store, WatchEvent, clone

GPU = "nvidia.com/gpu"
BIND_BATCH = 25


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number (enough for GPUs, CPUs and plain counts).

    Parsed here because no released kubernetes_asyncio has a quantity parser (36.1 has none;
    `kubernetes_asyncio.utils.quantity` exists only in an unmerged change) and the official
    synchronous client's `kubernetes.utils.parse_quantity` would bring a second Kubernetes client
    and five more packages for these few lines. The controller parses no quantities."""
    if value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return _parse_quantity(str(value))


@functools.lru_cache(maxsize=1024)
def _parse_quantity(value: str) -> float:
    text = value.strip()
    suffixes = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "Ki": 1024.0,
        "Mi": 1024.0**2,
        "Gi": 1024.0**3,
        "Ti": 1024.0**4,
    }
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * suffixes[suffix]
    return float(text)


def pod_gpus(pod: Obj) -> int:
    total = 0.0
    for c in pod.get("spec", {}).get("containers") or []:
        res = c.get("resources") or {}
        total += quantity(
            (res.get("requests") or {}).get(GPU) or (res.get("limits") or {}).get(GPU)
        )
    return int(total)


def node_gpus(node: Obj) -> int:
    status = node.get("status") or {}
    return int(quantity((status.get("allocatable") or status.get("capacity") or {}).get(GPU)))


def node_ready(node: Obj) -> bool:
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def tolerates(pod: Obj, taints: list[Obj]) -> bool:
    tolerations = pod.get("spec", {}).get("tolerations") or []
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        ok = False
        for tol in tolerations:
            if tol.get("effect") and tol["effect"] != taint.get("effect"):
                continue
            if (
                tol.get("operator") == "Exists"
                and (not tol.get("key") or tol["key"] == taint.get("key"))
            ) or (
                tol.get("key") == taint.get("key")
                and tol.get("value", "") == taint.get("value", "")
            ):
                ok = True
        if not ok:
            return False
    return True


def node_matches(pod: Obj, node: Obj) -> bool:
    """nodeSelector and taints (affinity beyond nodeSelector is not modelled)."""
    labels = node["metadata"].get("labels") or {}
    for k, v in (pod.get("spec", {}).get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    return tolerates(pod, node.get("spec", {}).get("taints") or [])


def unschedulable(pod: Obj) -> bool:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled":
            return bool(cond.get("status") == "False" and cond.get("reason") == "Unschedulable")
    return False


class _BestFit:
    """Feasible nodes bucketed by free GPUs: best fit (most allocated node that fits) in O(GPUs)."""

    def __init__(self, names: list[str], free: dict[str, int]) -> None:
        self.buckets: dict[int, dict[str, None]] = defaultdict(dict)
        for name in names:
            self.buckets[free[name]][name] = None

    def take(self, need: int) -> str | None:
        for amount in sorted(k for k, v in self.buckets.items() if v and k >= need):
            return next(iter(self.buckets[amount]))
        return None

    def move(self, name: str, before: int, after: int) -> None:
        bucket = self.buckets.get(before)
        if bucket is not None and name in bucket:
            del bucket[name]
            self.buckets[after][name] = None


class Scheduler(EventSource):
    """Keeps pending pods and per-node GPU use up to date from events; binds in passes."""

    def __init__(self, registry: Registry, store: Store) -> None:
        self.store = store
        self.pod_rt = registry.require("", "v1", "pods")
        self.node_rt = registry.require("", "v1", "nodes")
        self.reconciler: Reconciler[str] = Reconciler("scheduler", self._pass)
        self.bound = 0
        self._pending: dict[tuple[str, str], None] = {}
        self._placed: dict[tuple[str, str], tuple[str, int, int]] = {}  # node, GPUs, priority
        self._priorities: dict[int, int] = defaultdict(int)  # priority -> placed GPU pods
        self._used: dict[str, int] = defaultdict(int)
        self._on_node: dict[str, dict[tuple[str, str], None]] = defaultdict(dict)
        self._capacity: dict[str, int] = {}  # node -> allocatable GPUs
        self._schedulable: dict[str, None] = {}  # Ready, not cordoned, not being deleted
        store.subscribe(self._on_event)

    def _on_event(self, ev: WatchEvent) -> None:
        if ev.rt.key == self.node_rt.key:
            name = ev.obj["metadata"]["name"]
            if ev.type == "DELETED":
                self._capacity.pop(name, None)
                self._schedulable.pop(name, None)
            else:
                self._capacity[name] = node_gpus(ev.obj)
                if (
                    node_ready(ev.obj)
                    and not ev.obj.get("spec", {}).get("unschedulable")
                    and not ev.obj["metadata"].get("deletionTimestamp")
                ):
                    self._schedulable[name] = None
                else:
                    self._schedulable.pop(name, None)
            self.reconciler.mark("all")
            return
        if ev.rt.key != self.pod_rt.key:
            return
        meta = ev.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        node = (ev.obj.get("spec") or {}).get("nodeName")
        placed = self._placed.get(key)
        if ev.type == "DELETED":
            self._pending.pop(key, None)
            if placed is not None:
                del self._placed[key]
                self._used[placed[0]] -= placed[1]
                self._on_node[placed[0]].pop(key, None)
                if placed[1] > 0:
                    self._priorities[placed[2]] -= 1
            self.reconciler.mark("all")
        elif node:
            self._pending.pop(key, None)
            if placed is None:
                gpus = pod_gpus(ev.obj)
                priority = int(ev.obj["spec"].get("priority", 0))
                self._placed[key] = (node, gpus, priority)
                self._used[node] += gpus
                self._on_node[node][key] = None
                if gpus > 0:
                    self._priorities[priority] += 1
            if meta.get("deletionTimestamp"):
                self.reconciler.mark("all")
        elif meta.get("deletionTimestamp"):
            self._pending.pop(key, None)
        elif key not in self._pending:
            self._pending[key] = None
            self.reconciler.mark("all")

    def start(self) -> None:
        self.reconciler.start()

    async def stop(self) -> None:
        await self.reconciler.stop()

    def _pods_by_node(self) -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = defaultdict(list)
        for node, keys in self._on_node.items():
            for key in keys:
                pod = self.store.try_get(self.pod_rt, *key)
                if pod is not None:
                    out[node].append(pod)
        return out

    def _pass(self, _key: str) -> None:
        pending: list[Obj] = []
        for key in list(self._pending):
            pod = self.store.try_get(self.pod_rt, *key)
            if pod is None or pod.get("spec", {}).get("nodeName"):
                self._pending.pop(key, None)
            else:
                pending.append(pod)
        if not pending:
            return
        used = self._used
        n_nodes = len(self._capacity)
        candidates_cache: list[Obj] | None = None

        def candidates() -> list[Obj]:  # every schedulable node (for preemption), on demand
            nonlocal candidates_cache
            if candidates_cache is None:
                found = (self.store.try_get(self.node_rt, "", n) for n in self._schedulable)
                candidates_cache = [n for n in found if n is not None]
            return candidates_cache

        pending.sort(
            key=lambda p: (
                -int(p["spec"].get("priority", 0)),
                p["metadata"].get("creationTimestamp", ""),
                p["metadata"]["name"],
            )
        )
        free = {n: self._capacity[n] - used[n] for n in self._schedulable}
        with_room = [n for n, f in free.items() if f > 0]
        fits: dict[bytes, _BestFit] = {}
        by_node: dict[str, list[Obj]] | None = None
        lowest: int | None = None
        bound = 0
        for pod in pending:
            need = pod_gpus(pod)
            spec = pod.get("spec") or {}
            sig = orjson.dumps(
                [spec.get("nodeSelector"), spec.get("tolerations"), need == 0],
                option=orjson.OPT_SORT_KEYS,
            )
            fit = fits.get(sig)
            if fit is None:
                names = with_room if need > 0 else list(free)  # GPU-less pods fit anywhere
                room = (self.store.try_get(self.node_rt, "", n) for n in names)
                fit = fits[sig] = _BestFit(
                    [n["metadata"]["name"] for n in room if n is not None and node_matches(pod, n)],
                    free,
                )
            name = fit.take(need)
            if name is not None:
                before = free[name]
                free[name] -= need
                for other in fits.values():
                    other.move(name, before, free[name])
                if by_node is not None:
                    by_node[name].append(pod)
                self._bind(pod, name)
                bound += 1
                if bound >= BIND_BATCH:  # let the loop breathe; the next pass continues
                    self.reconciler.mark("all")
                    return
                continue
            nominated = None
            if lowest is None:
                lowest = min((p for p, n in self._priorities.items() if n > 0), default=2**31)
            if int(spec.get("priority", 0)) > lowest:  # someone might be evicted for it
                if by_node is None:
                    by_node = self._pods_by_node()
                nominated = self._preempt(pod, need, candidates(), used, by_node)
            if self._mark_unschedulable(pod, n_nodes, nominated):
                bound += 1  # a write all the same: it counts against the pass's budget
                if bound >= BIND_BATCH:
                    self.reconciler.mark("all")
                    return

    def _preempt(
        self,
        pod: Obj,
        need: int,
        candidates: list[Obj],
        used: dict[str, int],
        by_node: dict[str, list[Obj]],
    ) -> str | None:
        prio = int(pod["spec"].get("priority", 0))
        if pod["spec"].get("preemptionPolicy") == "Never":
            return None
        best: tuple[int, str, list[Obj]] | None = None
        for node in candidates:
            if not node_matches(pod, node):
                continue
            name = node["metadata"]["name"]
            free = node_gpus(node) - used[name]
            terminating = sum(
                pod_gpus(p) for p in by_node[name] if p["metadata"].get("deletionTimestamp")
            )
            if (
                free + terminating >= need
                and pod.get("status", {}).get("nominatedNodeName") == name
            ):
                return str(name)  # room is already on its way; do not evict more
            victims: list[Obj] = []
            lower = sorted(
                (
                    p
                    for p in by_node[name]
                    if not p["metadata"].get("deletionTimestamp")
                    and int(p["spec"].get("priority", 0)) < prio
                    and pod_gpus(p) > 0
                ),
                key=lambda p: int(p["spec"].get("priority", 0)),
            )
            freed = free + terminating
            for victim in lower:
                if freed >= need:
                    break
                victims.append(victim)
                freed += pod_gpus(victim)
            if freed >= need and victims and (best is None or len(victims) < best[0]):
                best = (len(victims), name, victims)
        if best is None:
            return None
        _, name, victims = best
        for victim in victims:
            meta = victim["metadata"]
            self.store.delete(self.pod_rt, meta["namespace"], meta["name"])
            self._event(
                victim,
                "Normal",
                "Preempted",
                f"Preempted by pod {pod['metadata']['uid']} on node {name}",
                "default-scheduler",
            )
        return name

    def _bind(self, pod: Obj, node_name: str) -> None:
        new = clone(pod)
        new["spec"]["nodeName"] = node_name
        status = new.setdefault("status", {})
        status.pop("nominatedNodeName", None)
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append(now_condition("PodScheduled", "True"))
        status["conditions"] = conds
        self.store.update(self.pod_rt, new, check_rv=False)
        self.bound += 1
        meta = pod["metadata"]
        self._event(
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node_name}",
            "default-scheduler",
        )

    def _mark_unschedulable(self, pod: Obj, n_nodes: int, nominated: str | None) -> bool:
        """Record why the pod waits; False when it already said so (nothing written)."""
        message = (
            (
                f"0/{n_nodes} nodes are available: {n_nodes} Insufficient {GPU}. "
                "preemption: not eligible or no victims found."
            )
            if n_nodes
            else "no nodes available to schedule pods"
        )
        status = pod.get("status") or {}
        if unschedulable(pod) and status.get("nominatedNodeName") == nominated:
            return False
        new = clone(pod)
        st = new.setdefault("status", {})
        conds = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append(now_condition("PodScheduled", "False", "Unschedulable", message))
        st["conditions"] = conds
        if nominated:
            st["nominatedNodeName"] = nominated
        else:
            st.pop("nominatedNodeName", None)
        self.store.update(self.pod_rt, new, check_rv=False)
        self._event(pod, "Warning", "FailedScheduling", message, "default-scheduler")
        return True
