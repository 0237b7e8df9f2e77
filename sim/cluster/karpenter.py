"""Karpenter, simulated (in the spirit of its KWOK provider): NodePools -> NodeClaims -> Nodes.

* A static NodePool (`spec.replicas` set) keeps exactly that many NodeClaims; scaling it (its
  `scale` subresource writes `spec.replicas`) adds claims or removes them (not-Ready first, then
  emptiest). `limits.nodes` caps it.
* A dynamic NodePool (no `spec.replicas`) provisions for pods the scheduler marked
  Unschedulable, batching them like Karpenter (window closes after `batch_idle_s` without a new
  pending pod, or `batch_max_s` after it opened), packing them onto capacity already on its way
  first, within `spec.limits` (`nvidia.com/gpu`, `nodes`); it deletes nodes that stayed empty for
  `spec.disruption.consolidateAfter` (empty-node consolidation only).
* CapacityBuffers (`sim.cluster.buffers`): their chunks count as pods that must fit. After the
  pending pods, `provision` packs the chunks onto the free GPUs of live nodes (Ready or booting)
  and launches NodeClaims for the rest; consolidation keeps an empty node the chunks need. A pod
  bound or deleted re-runs provisioning while a buffer exists, so used room is replaced.
* A NodeClaim is Launched and Registered at once (its Node appears NotReady) and Initialized/Ready
  after the pool's boot time; deleting it (finalizer `karpenter.sh/termination`) cordons the
  node, evicts its pods gracefully, waits for them, deletes the Node, then drops the finalizer.
GPUs per node and boot time come from the NodePool's annotations `surgescale.io/gpus-per-node`
and `surgescale.io/boot-seconds`, else the cluster's defaults. All delays use the sim clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from .admission import now_condition
from .buffers import CapacityBuffers
from .clock import SimClock
from .nodeclaims import FINALIZER, POOL_LABEL, NodeClaimLifecycle
from .reconcile import Reconciler
from .resources import Registry
from .scheduler import GPU, node_matches, node_ready, pod_gpus, quantity, unschedulable
from .store import Obj, Store, WatchEvent, clone, random_suffix
from .workloads import owner_ref

log = logging.getLogger(__name__)


def parse_duration(text: Any) -> float | None:
    """Go duration (`30s`, `5m`, `1h30m`) in seconds; None for `Never`."""
    if text is None:
        return 0.0
    if str(text) == "Never":
        return None
    total = 0.0
    for value, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", str(text)):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


@dataclass(frozen=True, slots=True)
class PoolShape:
    gpus_per_node: int
    boot_seconds: float


class Karpenter(NodeClaimLifecycle):
    """NodePool/NodeClaim/Node lifecycles; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        clock: SimClock,
        *,
        default_gpus_per_node: int,
        default_boot_s: float,
        batch_idle_s: float = 1.0,
        batch_max_s: float = 10.0,
    ) -> None:
        self.registry = registry
        self.store = store
        self.clock = clock
        self.default_gpus = default_gpus_per_node
        self.default_boot_s = default_boot_s
        self.batch_idle_s = batch_idle_s
        self.batch_max_s = batch_max_s
        self.pod_rt = registry.require("", "v1", "pods")
        self.node_rt = registry.require("", "v1", "nodes")
        self.pools: Reconciler[str] = Reconciler("nodepools", self._sync_pool)
        self._tasks: set[asyncio.Task[None]] = set()
        self._terminating: set[str] = set()
        self._booting: set[str] = set()
        self._batch_start: float | None = None
        self._batch_last = 0.0
        self._batch_wake = asyncio.Event()
        self._empty_since: dict[str, float] = {}
        self._node_seq = 0
        self._by_node: dict[str, set[tuple[str, str]]] = {}
        self._drained: dict[str, asyncio.Event] = {}
        self.provisioned = 0
        self._seen_ready: set[str] = set()
        self.buffers: CapacityBuffers | None = None
        """Set by the cluster: the chunks to keep room for."""
        store.subscribe(self._on_event)

    def watch_buffers(self, buffers: CapacityBuffers) -> None:
        """Keep room for `buffers`' chunks; a change to them re-runs provisioning."""
        self.buffers = buffers
        buffers.on_change = self._note_pending

    # ---- plumbing --------------------------------------------------------------------------
    @property
    def pool_rt(self) -> Any:
        return self.registry.get("karpenter.sh", "v1", "nodepools")

    @property
    def claim_rt(self) -> Any:
        return self.registry.get("karpenter.sh", "v1", "nodeclaims")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        self.pools.start()
        self._spawn(self._batcher(), "karpenter-batcher")
        self._spawn(self._consolidator(), "karpenter-consolidator")

    async def stop(self) -> None:
        await self.pools.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def shape(self, pool: Obj) -> PoolShape:
        ann = pool["metadata"].get("annotations") or {}
        try:
            gpus = int(ann.get("surgescale.io/gpus-per-node", self.default_gpus))
            boot = float(ann.get("surgescale.io/boot-seconds", self.default_boot_s))
        except ValueError:
            gpus, boot = self.default_gpus, self.default_boot_s
        return PoolShape(gpus, boot)

    def claims_of(self, pool_name: str) -> list[Obj]:
        rt = self.claim_rt
        if rt is None:
            return []
        return [
            c
            for c in self.store.items(rt)
            if (c["metadata"].get("labels") or {}).get(POOL_LABEL) == pool_name
        ]

    def _on_event(self, ev: WatchEvent) -> None:
        pool_rt, claim_rt = self.pool_rt, self.claim_rt
        if pool_rt is None or claim_rt is None:
            return
        if ev.rt.key == pool_rt.key:
            self.pools.mark(ev.obj["metadata"]["name"])
        elif ev.rt.key == claim_rt.key:
            meta = ev.obj["metadata"]
            pool = (meta.get("labels") or {}).get(POOL_LABEL)
            if pool:
                self.pools.mark(pool)
            if ev.type == "ADDED":
                self._spawn(self._launch(meta["name"]), f"launch-{meta['name']}")
            elif meta.get("deletionTimestamp") and meta["name"] not in self._terminating:
                self._terminating.add(meta["name"])
                self._spawn(self._terminate(meta["name"]), f"terminate-{meta['name']}")
        elif (
            ev.rt.key == self.node_rt.key
            and ev.type == "MODIFIED"
            and self.buffers is not None
            and node_ready(ev.obj)
            and ev.obj["metadata"]["name"] not in self._seen_ready
        ):
            self._seen_ready.add(ev.obj["metadata"]["name"])
            if self.buffers.chunks():
                self._note_pending()  # the chunks' room is Ready now: report it
        elif ev.rt.key == self.node_rt.key and ev.type == "DELETED":
            self._seen_ready.discard(ev.obj["metadata"]["name"])
            name = ev.obj["metadata"]["name"]
            if claim_rt is not None and self.store.try_get(claim_rt, "", name) is not None:
                with contextlib.suppress(Exception):
                    self.store.delete(claim_rt, "", name)
        elif ev.rt.key == self.pod_rt.key:
            node = str((ev.obj.get("spec") or {}).get("nodeName") or "")
            meta = ev.obj["metadata"]
            key = (meta["namespace"], meta["name"])
            newly_bound = bool(node) and key not in self._by_node.get(node, ())
            self._index_pod(ev)
            if ev.type != "DELETED" and unschedulable(ev.obj):
                self._note_pending()
            elif (
                self.buffers is not None
                and (newly_bound or (ev.type == "DELETED" and node))
                and self.buffers.chunks()
            ):
                self._note_pending()  # the room the chunks had has changed

    def _index_pod(self, ev: WatchEvent) -> None:
        meta = ev.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        node = ev.obj.get("spec", {}).get("nodeName")
        if not node:
            return
        pods = self._by_node.setdefault(node, set())
        if ev.type == "DELETED":
            pods.discard(key)
            if not pods:
                del self._by_node[node]
                if node in self._drained:
                    self._drained[node].set()
        else:
            pods.add(key)

    def _note_pending(self) -> None:
        now = self.clock.now()
        if self._batch_start is None:
            self._batch_start = now
        self._batch_last = now
        self._batch_wake.set()

    # ---- NodePool reconcile (static replicas, status) -------------------------------------
    def _sync_pool(self, name: str) -> None:
        pool_rt = self.pool_rt
        if pool_rt is None:
            return
        pool = self.store.try_get(pool_rt, "", name)
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            return
        claims = [c for c in self.claims_of(name) if not c["metadata"].get("deletionTimestamp")]
        replicas = pool["spec"].get("replicas")
        if replicas is not None:
            limit = (pool["spec"].get("limits") or {}).get("nodes")
            want = int(replicas) if limit is None else min(int(replicas), int(quantity(limit)))
            if len(claims) < want:
                for _ in range(want - len(claims)):
                    claims.append(self._create_claim(pool))
            elif len(claims) > want:
                for claim in self._removal_order(claims)[: len(claims) - want]:
                    self.store.delete(self.claim_rt, "", claim["metadata"]["name"])
        self._write_pool_status(pool)

    def _pods_on(self, node_name: str) -> list[Obj]:
        out = []
        for key in list(self._by_node.get(node_name, ())):
            pod = self.store.try_get(self.pod_rt, *key)
            if pod is not None and pod.get("spec", {}).get("nodeName") == node_name:
                out.append(pod)
        return out

    def _removal_order(self, claims: list[Obj]) -> list[Obj]:
        def rank(c: Obj) -> tuple[int, int, str]:
            ready = any(
                x.get("type") == "Ready" and x.get("status") == "True"
                for x in (c.get("status") or {}).get("conditions") or []
            )
            pods = len(self._pods_on(c["metadata"]["name"]))
            return (1 if ready else 0, pods, _desc(c["metadata"].get("creationTimestamp", "")))

        return sorted(claims, key=rank)

    def _write_pool_status(self, pool: Obj) -> None:
        name = pool["metadata"]["name"]
        shape = self.shape(pool)
        claims = [c for c in self.claims_of(name) if not c["metadata"].get("deletionTimestamp")]
        nodes = len(claims)
        prev = pool.get("status") or {}
        conds = {c["type"]: c for c in prev.get("conditions") or []}
        for type_ in ("ValidationSucceeded", "NodeClassReady", "NodeRegistrationHealthy", "Ready"):
            if conds.get(type_, {}).get("status") != "True":
                conds[type_] = now_condition(type_, "True", type_)
        status = {
            "nodes": nodes,
            "resources": {
                "nodes": str(nodes),
                GPU: str(nodes * shape.gpus_per_node),
                "cpu": str(nodes * 64),
                "memory": f"{nodes * 512}Gi",
                "pods": str(nodes * 110),
            },
            "conditions": [conds[k] for k in sorted(conds)],
        }
        if prev != status:
            new = clone(pool)
            new["status"] = status
            self.store.update(self.pool_rt, new, check_rv=False)

    # ---- NodeClaims and Nodes ------------------------------------------------------------
    def _create_claim(self, pool: Obj) -> Obj:
        name = pool["metadata"]["name"]
        shape = self.shape(pool)
        tmpl = pool["spec"].get("template") or {}
        tspec = tmpl.get("spec") or {}
        single_valued = {  # Karpenter labels nodes with requirements that pin one value
            r["key"]: r["values"][0]
            for r in tspec.get("requirements") or []
            if r.get("operator") == "In" and len(r.get("values") or []) == 1
        }
        labels = {
            "node.kubernetes.io/instance-type": f"sim-gpu-{shape.gpus_per_node}x",
            "karpenter.sh/capacity-type": "on-demand",
            "topology.kubernetes.io/zone": "sim-zone-a",
            **single_valued,
            **((tmpl.get("metadata") or {}).get("labels") or {}),
            POOL_LABEL: name,
        }
        for _ in range(10):
            claim_name = f"{name}-{random_suffix(rng=self.store.rng)}"
            if self.store.try_get(self.claim_rt, "", claim_name) is None:
                break
        claim: Obj = {
            "metadata": {
                "name": claim_name,
                "labels": labels,
                "annotations": {
                    "karpenter.sh/nodepool-hash": "sim",
                    "surgescale.io/gpus-per-node": str(shape.gpus_per_node),
                    "surgescale.io/boot-seconds": str(shape.boot_seconds),
                },
                "ownerReferences": [{**owner_ref(pool), "controller": False}],
                "finalizers": [FINALIZER],
            },
            "spec": {
                "nodeClassRef": tspec.get("nodeClassRef"),
                "requirements": tspec.get("requirements") or [],
                "resources": {"requests": {GPU: str(shape.gpus_per_node)}},
                **({"taints": tspec["taints"]} if tspec.get("taints") else {}),
                **({"expireAfter": tspec["expireAfter"]} if tspec.get("expireAfter") else {}),
            },
        }
        rt = self.claim_rt
        validator = rt.validator
        if validator is not None and hasattr(validator, "default"):
            validator.default(claim)
        self.provisioned += 1
        created = self.store.create(rt, claim)
        self._event(
            pool, "Normal", "NodeClaimCreated", f"Created NodeClaim {claim_name}", "karpenter"
        )
        return created

    # ---- dynamic provisioning ---------------------------------------------------------------
    async def _batcher(self) -> None:
        while True:
            await self._batch_wake.wait()
            self._batch_wake.clear()
            while self._batch_start is not None:
                now = self.clock.now()
                idle_end = self._batch_last + self.batch_idle_s
                max_end = self._batch_start + self.batch_max_s
                if now >= min(idle_end, max_end):
                    self._batch_start = None
                    try:
                        self.provision()
                    except Exception:
                        log.exception("provisioning failed")
                    break
                await self.clock.sleep(min(idle_end, max_end) - now)

    def dynamic_pools(self) -> list[Obj]:
        if self.pool_rt is None:
            return []
        pools = [
            p
            for p in self.store.items(self.pool_rt)
            if p["spec"].get("replicas") is None and not p["metadata"].get("deletionTimestamp")
        ]
        return sorted(pools, key=lambda p: -int(p["spec"].get("weight") or 0))

    def provision(self) -> int:
        """Create NodeClaims for the Unschedulable pods; returns how many were created."""
        pools = self.dynamic_pools()
        if not pools:
            return 0
        pending = [
            p
            for p in self.store.items(self.pod_rt)
            if not p["spec"].get("nodeName")
            and not p["metadata"].get("deletionTimestamp")
            and unschedulable(p)
            and not (p.get("status") or {}).get("nominatedNodeName")
        ]
        pending.sort(key=lambda p: (-pod_gpus(p), p["metadata"]["name"]))
        inflight: dict[str, list[int]] = {}
        created = 0
        for pool in pools:
            name = pool["metadata"]["name"]
            gpus = self.shape(pool).gpus_per_node
            free = []
            for claim in self.claims_of(name):
                cname = claim["metadata"]["name"]
                node = self.store.try_get(self.node_rt, "", cname)
                if claim["metadata"].get("deletionTimestamp") or (
                    node is not None and node_ready(node)
                ):
                    continue
                free.append(gpus - sum(pod_gpus(p) for p in self._pods_on(cname)))
            inflight[name] = free
        for pod in pending:
            need = pod_gpus(pod)
            for pool in pools:
                pname = pool["metadata"]["name"]
                shape = self.shape(pool)
                probe = {
                    "metadata": {
                        "labels": {
                            **(
                                ((pool["spec"].get("template") or {}).get("metadata") or {}).get(
                                    "labels"
                                )
                                or {}
                            ),
                            POOL_LABEL: pname,
                        }
                    },
                    "spec": {
                        "taints": ((pool["spec"].get("template") or {}).get("spec") or {}).get(
                            "taints"
                        )
                        or []
                    },
                }
                if need > shape.gpus_per_node or not node_matches(pod, probe):
                    continue
                slots = inflight[pname]
                slot = next((i for i, f in enumerate(slots) if f >= need), None)
                if slot is not None:
                    slots[slot] -= need
                    break
                if not self._within_limits(pool, shape, extra_nodes=1):
                    continue
                self._create_claim(pool)
                created += 1
                slots.append(shape.gpus_per_node - need)
                break
        return created + self._provision_buffers(pools, inflight)

    def _free_ready(self, pool_name: str, gpus: int, *, exclude: str = "") -> list[int]:
        """Free GPUs of each Ready, live node of a pool (pods bound to it subtracted)."""
        out = []
        for claim in self.claims_of(pool_name):
            cname = claim["metadata"]["name"]
            node = self.store.try_get(self.node_rt, "", cname)
            if cname == exclude or claim["metadata"].get("deletionTimestamp"):
                continue
            if node is not None and node_ready(node) and not node["spec"].get("unschedulable"):
                out.append(gpus - sum(pod_gpus(p) for p in self._pods_on(cname)))
        return out

    def _pool_fits(self, pool: Obj, pod: Obj) -> bool:
        tmpl = pool["spec"].get("template") or {}
        probe = {
            "metadata": {
                "labels": {
                    **((tmpl.get("metadata") or {}).get("labels") or {}),
                    POOL_LABEL: pool["metadata"]["name"],
                }
            },
            "spec": {"taints": (tmpl.get("spec") or {}).get("taints") or []},
        }
        return node_matches(pod, probe)

    def _provision_buffers(self, pools: list[Obj], inflight: dict[str, list[int]]) -> int:
        """Launch nodes until every CapacityBuffer chunk fits beside the bound and pending pods
        (`inflight`: what the pending pods left free on booting nodes); report back per buffer."""
        if self.buffers is None:
            return 0
        created = 0
        ready = {
            p["metadata"]["name"]: self._free_ready(
                p["metadata"]["name"], self.shape(p).gpus_per_node
            )
            for p in pools
        }
        for chunk in sorted(self.buffers.chunks(), key=lambda c: (-c.gpus, c.namespace, c.name)):
            fit_ready = 0
            launching = False
            for _ in range(chunk.count):
                placed = False
                for pool in pools:
                    pname = pool["metadata"]["name"]
                    shape = self.shape(pool)
                    if chunk.gpus > shape.gpus_per_node or not self._pool_fits(pool, chunk.pod):
                        continue
                    for free in (ready[pname], inflight[pname]):
                        slot = next((i for i, f in enumerate(free) if f >= chunk.gpus), None)
                        if slot is not None:
                            free[slot] -= chunk.gpus
                            placed = True
                            fit_ready += free is ready[pname]
                            launching = launching or free is inflight[pname]
                            break
                    if placed:
                        break
                    if not self._within_limits(pool, shape, extra_nodes=1):
                        continue
                    self._create_claim(pool)
                    created += 1
                    inflight[pname].append(shape.gpus_per_node - chunk.gpus)
                    placed = launching = True
                    break
            self.buffers.report(
                (chunk.namespace, chunk.name),
                fit=fit_ready,
                wanted=chunk.count,
                launching=launching,
            )
        return created

    def _buffers_need(self, pool: Obj, node_name: str) -> bool:
        """Whether the chunks stop fitting on this pool's Ready nodes without `node_name`."""
        if self.buffers is None:
            return False
        chunks = [c for c in self.buffers.chunks() if self._pool_fits(pool, c.pod)]
        if not chunks:
            return False
        free = self._free_ready(
            pool["metadata"]["name"], self.shape(pool).gpus_per_node, exclude=node_name
        )
        for chunk in sorted(chunks, key=lambda c: -c.gpus):
            for _ in range(chunk.count):
                slot = next((i for i, f in enumerate(free) if f >= chunk.gpus), None)
                if slot is None:
                    return True
                free[slot] -= chunk.gpus
        return False

    def _within_limits(self, pool: Obj, shape: PoolShape, *, extra_nodes: int) -> bool:
        limits = pool["spec"].get("limits") or {}
        count = (
            len(
                [
                    c
                    for c in self.claims_of(pool["metadata"]["name"])
                    if not c["metadata"].get("deletionTimestamp")
                ]
            )
            + extra_nodes
        )
        if "nodes" in limits and count > quantity(limits["nodes"]):
            return False
        return not (GPU in limits and count * shape.gpus_per_node > quantity(limits[GPU]))

    # ---- consolidation ---------------------------------------------------------------------
    async def _consolidator(self) -> None:
        while True:
            await asyncio.sleep(max(0.02, self.clock.wall(1.0)))
            try:
                self.consolidate()
            except Exception:
                log.exception("consolidation failed")

    def consolidate(self) -> None:
        now = self.clock.now()
        for pool in self.dynamic_pools():
            disruption = pool["spec"].get("disruption") or {}
            after = parse_duration(disruption.get("consolidateAfter", "0s"))
            if after is None:
                continue
            for claim in self.claims_of(pool["metadata"]["name"]):
                name = claim["metadata"]["name"]
                node = self.store.try_get(self.node_rt, "", name)
                if (
                    claim["metadata"].get("deletionTimestamp")
                    or node is None
                    or not node_ready(node)
                ):
                    continue
                if self._pods_on(name):
                    self._empty_since.pop(name, None)
                    continue
                if self._buffers_need(pool, name):
                    self._empty_since.pop(name, None)
                    continue  # a CapacityBuffer keeps this room warm
                since = self._empty_since.setdefault(name, now)
                if now - since >= after:
                    self._empty_since.pop(name, None)
                    self._event(
                        claim,
                        "Normal",
                        "DisruptionTerminating",
                        "Disrupting NodeClaim: Empty",
                        "karpenter",
                    )
                    self.store.delete(self.claim_rt, "", name)


def _desc(ts: str) -> str:
    return "".join(chr(0x10FFFF - ord(c)) for c in ts)
