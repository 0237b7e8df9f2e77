"""Lifecycles on a fast clock: deployments -> ready pods serving vLLM's API, endpointslices,
graceful scale-down, scheduling on GPUs, Karpenter static and dynamic pools, preemption."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from sim.cluster import NodePoolConfig, RunningCluster
from sim.cluster.store import Obj, WatchEvent, clone
from sim.cluster.workloads import pod_is_ready

from .conftest import ClusterFactory, eventually


def model_deployment(
    name: str,
    replicas: int,
    *,
    gpus: int = 1,
    load_s: float = 20,
    grace_s: int = 30,
    priority_class: str | None = None,
    model: str | None = "llama3-8b",
) -> Obj:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": grace_s,
        "containers": [
            {
                "name": "vllm",
                "image": "vllm/vllm-openai",
                "env": [{"name": "SURGESCALE_MODEL", "value": model}] if model else [],
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }
        ],
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {"surgescale.io/load-seconds": str(load_s)},
                },
                "spec": spec,
            },
        },
    }


def create(cluster: RunningCluster, group: str, plural: str, obj: Obj) -> Obj:
    rt = cluster.resource(group, "v1", plural)
    obj = clone(obj)
    cluster.ctx.admit(rt, obj, None)
    return cluster.store.create(rt, obj)


def scale(
    cluster: RunningCluster,
    group: str,
    plural: str,
    name: str,
    replicas: int,
    namespace: str = "default",
) -> None:
    rt = cluster.resource(group, "v1", plural)
    obj = clone(cluster.store.get(rt, namespace, name))
    obj["spec"]["replicas"] = replicas
    cluster.store.update(rt, obj)


def pods(cluster: RunningCluster, app: str) -> list[Obj]:
    rt = cluster.resource("", "v1", "pods")
    return [
        p for p in cluster.store.items(rt) if (p["metadata"].get("labels") or {}).get("app") == app
    ]


def ready_pods(cluster: RunningCluster, app: str) -> list[Obj]:
    return [
        p
        for p in pods(cluster, app)
        if pod_is_ready(p) and not p["metadata"].get("deletionTimestamp")
    ]


def slice_ips(cluster: RunningCluster, service: str) -> list[str]:
    rt = cluster.resource("discovery.k8s.io", "v1", "endpointslices")
    return [
        a
        for s in cluster.store.items(rt)
        if s["metadata"]["labels"].get("kubernetes.io/service-name") == service
        for e in s.get("endpoints") or []
        for a in e["addresses"]
    ]


def service(name: str) -> Obj:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8000}],
        },
    }


async def test_deployment_pods_load_then_serve_behind_endpointslice(
    cluster: RunningCluster,
) -> None:
    history: list[tuple[str, bool]] = []

    def record(ev: WatchEvent) -> None:
        if ev.rt.plural == "pods":
            history.append((str((ev.obj.get("status") or {}).get("phase")), pod_is_ready(ev.obj)))

    cluster.store.subscribe(record)
    create(cluster, "", "services", service("llama"))
    create(cluster, "apps", "deployments", model_deployment("llama", 2))
    await eventually(lambda: len(ready_pods(cluster, "llama")) == 2, what="2 ready pods")
    await eventually(lambda: len(slice_ips(cluster, "llama")) == 2, what="slice lists both")
    pod = ready_pods(cluster, "llama")[0]
    assert pod["metadata"]["name"].startswith("llama-")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert "pod-template-hash" in pod["metadata"]["labels"]
    assert ("Running", False) in history, "a loading pod is Running but not Ready first"
    deploy = cluster.store.get(cluster.resource("apps", "v1", "deployments"), "default", "llama")
    assert deploy["status"]["readyReplicas"] == 2
    assert deploy["status"]["observedGeneration"] == deploy["metadata"]["generation"]
    async with aiohttp.ClientSession() as http:
        for ip in slice_ips(cluster, "llama"):
            async with http.get(f"http://{ip}:8000/health") as r:
                assert r.status == 200
            async with http.get(f"http://{ip}:8000/v1/models") as r:
                assert "llama3-8b" in await r.text()


async def test_pods_without_room_stay_pending_until_a_node_boots(cluster: RunningCluster) -> None:
    await eventually(
        lambda: cluster.store.count(cluster.resource("", "v1", "nodes")) == 1, what="static node"
    )
    create(cluster, "apps", "deployments", model_deployment("big", 3, gpus=4, model=None))
    await eventually(lambda: len(ready_pods(cluster, "big")) == 2, what="two 4-GPU pods fit")

    def pending_unschedulable() -> bool:
        return any(
            not p["spec"].get("nodeName")
            and any(c.get("reason") == "Unschedulable" for c in p["status"].get("conditions") or [])
            for p in pods(cluster, "big")
        )

    await eventually(pending_unschedulable, what="third pod Unschedulable")
    scale(cluster, "karpenter.sh", "nodepools", "gpu", 2, namespace="")
    await eventually(lambda: len(ready_pods(cluster, "big")) == 3, what="third pod after boot")
    nodes = {p["spec"]["nodeName"] for p in ready_pods(cluster, "big")}
    assert len(nodes) == 2


async def test_scale_down_leaves_slice_first_and_finishes_in_flight(
    cluster: RunningCluster,
) -> None:
    create(cluster, "", "services", service("m"))
    create(cluster, "apps", "deployments", model_deployment("m", 1, grace_s=2000))
    await eventually(lambda: len(slice_ips(cluster, "m")) == 1, what="pod in slice")
    ip = slice_ips(cluster, "m")[0]
    name = ready_pods(cluster, "m")[0]["metadata"]["name"]
    order: list[str] = []

    def record(ev: WatchEvent) -> None:
        # Leaving = no endpoint is ready any more (it stays listed as terminating, as in
        # Kubernetes, until the pod is gone).
        ready = [e for e in ev.obj.get("endpoints") or [] if e["conditions"]["ready"]]
        if ev.rt.plural == "endpointslices" and not ready and "left" not in order:
            order.append("left")
        if ev.rt.plural == "pods" and ev.type == "DELETED" and ev.obj["metadata"]["name"] == name:
            order.append("deleted")

    cluster.store.subscribe(record)
    async with aiohttp.ClientSession() as http:
        body = {"model": "llama3-8b", "prompt": "hello " * 50, "max_tokens": 64, "stream": True}
        async with http.post(f"http://{ip}:8000/v1/completions", json=body) as r:
            assert r.status == 200
            first = await r.content.readline()
            assert first.startswith(b"data:")
            scale(cluster, "apps", "deployments", "m", 0)
            rest = await asyncio.wait_for(r.content.read(), 20)
    assert b"[DONE]" in rest, "the in-flight request finished during the grace period"
    await eventually(lambda: not pods(cluster, "m"), what="pod gone after it stopped")
    assert order == ["left", "deleted"]


async def test_crashed_model_server_is_restarted(cluster: RunningCluster) -> None:
    create(cluster, "apps", "deployments", model_deployment("c", 1))
    await eventually(lambda: len(ready_pods(cluster, "c")) == 1, what="ready")
    name = ready_pods(cluster, "c")[0]["metadata"]["name"]
    server = cluster.kubelet.server_for("default", name)
    assert server is not None
    await server.set_faults(crash=True)

    def restarted() -> bool:
        ps = ready_pods(cluster, "c")
        return bool(ps) and ps[0]["status"]["containerStatuses"][0]["restartCount"] == 1

    await eventually(restarted, what="restart with restartCount 1")


async def test_dynamic_pool_batches_provisions_within_limits_and_consolidates(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(
        nodepools=(
            NodePoolConfig(
                name="burst",
                gpus_per_node=4,
                boot_seconds=30,
                replicas=None,
                limit_gpus=8,
                consolidate_after="60s",
            ),
        )
    )
    claims_rt = cluster.resource("karpenter.sh", "v1", "nodeclaims")
    first_pending: list[float] = []
    claim_times: list[float] = []

    def record(ev: WatchEvent) -> None:
        if (
            ev.rt.plural == "pods"
            and not first_pending
            and any(
                c.get("reason") == "Unschedulable"
                for c in (ev.obj.get("status") or {}).get("conditions") or []
            )
        ):
            first_pending.append(cluster.clock.now())
        if ev.rt.plural == "nodeclaims" and ev.type == "ADDED":
            claim_times.append(cluster.clock.now())

    cluster.store.subscribe(record)
    create(cluster, "apps", "deployments", model_deployment("w", 6, model=None))
    await eventually(lambda: len(ready_pods(cluster, "w")) == 6, what="6 pods on new nodes")
    assert cluster.store.count(claims_rt) == 2, "6 GPUs of demand -> two 4-GPU nodes"
    assert claim_times[0] - first_pending[0] >= 0.9, "waited for the 1 s idle batching window"
    scale(cluster, "apps", "deployments", "w", 12)
    await eventually(lambda: len(ready_pods(cluster, "w")) == 8, what="8 pods within limit")
    await asyncio.sleep(0.3)
    assert cluster.store.count(claims_rt) == 2, "limit of 8 GPUs holds"
    assert len(ready_pods(cluster, "w")) == 8
    scale(cluster, "apps", "deployments", "w", 0)
    await eventually(lambda: cluster.store.count(claims_rt) == 0, what="empty nodes consolidated")
    await eventually(
        lambda: cluster.store.count(cluster.resource("", "v1", "nodes")) == 0, what="nodes deleted"
    )


async def test_headroom_pods_are_preempted_by_real_pods(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(
        nodepools=(NodePoolConfig(name="gpu", gpus_per_node=8, boot_seconds=10, replicas=1),)
    )
    create(
        cluster,
        "apps",
        "deployments",
        model_deployment("headroom", 8, model=None, priority_class="surgescale-headroom"),
    )
    await eventually(lambda: len(ready_pods(cluster, "headroom")) == 8, what="headroom fills node")
    assert all(p["spec"]["priority"] == -10 for p in pods(cluster, "headroom"))
    create(cluster, "apps", "deployments", model_deployment("real", 2, model=None))
    await eventually(lambda: len(ready_pods(cluster, "real")) == 2, what="real pods run")
    await eventually(lambda: len(ready_pods(cluster, "headroom")) == 6, what="2 evicted")
    pending = [p for p in pods(cluster, "headroom") if not p["spec"].get("nodeName")]
    assert len(pending) == 2, "the replacements wait: they cannot preempt anyone"


async def test_deleting_a_nodeclaim_drains_its_node(cluster: RunningCluster) -> None:
    create(cluster, "apps", "deployments", model_deployment("d", 2, model=None))
    await eventually(lambda: len(ready_pods(cluster, "d")) == 2, what="pods running")
    claims_rt = cluster.resource("karpenter.sh", "v1", "nodeclaims")
    claim = next(iter(cluster.store.items(claims_rt)))
    old = {p["metadata"]["name"] for p in pods(cluster, "d")}
    cluster.store.delete(claims_rt, "", claim["metadata"]["name"])
    await eventually(
        lambda: (
            cluster.store.count(cluster.resource("", "v1", "nodes")) <= 1
            and not (old & {p["metadata"]["name"] for p in pods(cluster, "d")})
        ),
        what="old pods evicted",
    )
    await eventually(lambda: len(ready_pods(cluster, "d")) == 2, what="replacement node + pods")


async def test_applied_nodepool_labels_taints_and_selectors(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster()
    pool = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {
            "name": "h200",
            "annotations": {"surgescale.io/gpus-per-node": "8", "surgescale.io/boot-seconds": "30"},
        },
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"labels": {"surgescale.io/gpu": "h200"}},
                "spec": {
                    "nodeClassRef": {
                        "group": "karpenter.k8s.aws",
                        "kind": "EC2NodeClass",
                        "name": "gpu",
                    },
                    "requirements": [
                        {
                            "key": "node.kubernetes.io/instance-type",
                            "operator": "In",
                            "values": ["p5e.48xlarge"],
                        }
                    ],
                    "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
                },
            },
        },
    }
    create(cluster, "karpenter.sh", "nodepools", pool)
    plain = model_deployment("plain", 1, model=None)
    create(cluster, "apps", "deployments", plain)
    picky = model_deployment("picky", 1, model=None)
    picky["spec"]["template"]["spec"]["nodeSelector"] = {"surgescale.io/gpu": "h200"}
    picky["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    create(cluster, "apps", "deployments", picky)
    await eventually(lambda: len(ready_pods(cluster, "picky")) == 1, what="picky pod runs")
    node = cluster.store.get(
        cluster.resource("", "v1", "nodes"), "", ready_pods(cluster, "picky")[0]["spec"]["nodeName"]
    )
    labels = node["metadata"]["labels"]
    assert labels["node.kubernetes.io/instance-type"] == "p5e.48xlarge"
    assert labels["karpenter.sh/nodepool"] == "h200"
    assert labels["surgescale.io/gpu"] == "h200"
    await asyncio.sleep(0.3)
    assert not pods(cluster, "plain")[0]["spec"].get("nodeName"), "untolerated taint keeps it off"


async def test_pods_without_gpus_fit_on_full_gpu_nodes(cluster: RunningCluster) -> None:
    create(cluster, "apps", "deployments", model_deployment("full", 8, model=None))
    await eventually(lambda: len(ready_pods(cluster, "full")) == 8, what="node's GPUs all used")
    cpu_only = model_deployment("cpu", 2, model=None)
    del cpu_only["spec"]["template"]["spec"]["containers"][0]["resources"]
    create(cluster, "apps", "deployments", cpu_only)
    await eventually(lambda: len(ready_pods(cluster, "cpu")) == 2, what="GPU-less pods run")
