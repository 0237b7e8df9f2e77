"""The ReplicaSet honours `controller.kubernetes.io/pod-deletion-cost` on scale-down, set and
scaled over real HTTP (kubernetes_asyncio), and the fault hook injects API trouble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config

from sim.cluster import NodePoolConfig, RunningCluster
from sim.cluster.faults import FaultRule
from sim.cluster.workloads import deletion_cost
from sim.localredis.server import free_port

from .conftest import ClusterFactory, eventually
from .test_lifecycles import create, model_deployment, ready_pods

MERGE: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
COST = "controller.kubernetes.io/pod-deletion-cost"


async def test_scale_down_removes_the_pods_with_the_lowest_deletion_cost_first(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = await make_cluster(
        nodepools=(NodePoolConfig(name="gpu", gpus_per_node=8, boot_seconds=20, replicas=1),),
        pod_port=free_port(),  # other runs on this machine may hold 127.x:8000
    )
    cfg = client.Configuration()
    path = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        await _scale_down_by_cost(cluster, api)


async def _scale_down_by_cost(cluster: RunningCluster, api: client.ApiClient) -> None:
    create(cluster, "apps", "deployments", model_deployment("m", 6, load_s=1))
    await eventually(lambda: len(ready_pods(cluster, "m")) == 6, what="6 ready pods")
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    # Oldest pods cheapest, so "newest first" alone would pick the wrong ones.
    by_age = sorted(
        ready_pods(cluster, "m"),
        key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]),
    )
    costs = dict(zip((p["metadata"]["name"] for p in by_age), (0, 1, 2, 3, 40, 7), strict=True))
    for name, cost in costs.items():
        await core.patch_namespaced_pod(
            name, "default", {"metadata": {"annotations": {COST: str(cost)}}}, **MERGE
        )
    await apps.patch_namespaced_deployment_scale("m", "default", {"spec": {"replicas": 2}})
    await eventually(lambda: len(ready_pods(cluster, "m")) == 2, what="scale-down to 2")
    kept = {p["metadata"]["name"] for p in ready_pods(cluster, "m")}
    assert kept == {n for n, c in costs.items() if c in (40, 7)}


@pytest.mark.parametrize(
    ("annotation", "cost"),
    [("12", 12), ("-3", -3), (" 5 ", 5), ("x", 0), ("99999999999", 0), (None, 0)],
    ids=["int", "negative", "spaces", "garbage", "beyond-int32", "absent"],
)
def test_deletion_cost_is_read_as_kubernetes_does(annotation: str | None, cost: int) -> None:
    meta: dict[str, Any] = {"name": "p"}
    if annotation is not None:
        meta["annotations"] = {COST: annotation}
    assert deletion_cost({"metadata": meta}) == cost


async def test_fault_rules_answer_with_status_and_retry_after_then_expire(
    cluster: RunningCluster,
) -> None:
    async with aiohttp.ClientSession() as http:
        base = cluster.url
        rule = {"path": "/deployments", "method": "GET", "status": 429, "retry_after": "inf"}
        async with http.post(f"{base}/_sim/faults", json=rule) as resp:
            assert resp.status == 200
        url = f"{base}/apis/apps/v1/namespaces/default/deployments"
        async with http.get(url) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "inf"
            assert (await resp.json())["code"] == 429
        async with http.get(url) as resp:
            assert resp.status == 200  # times=1: spent
        async with http.get(f"{base}/_sim/faults") as resp:
            assert [r["hits"] for r in await resp.json()] == [1]
        async with http.post(f"{base}/_sim/faults", json={"status": 200}) as resp:
            assert resp.status == 400  # not a fault
        async with http.delete(f"{base}/_sim/faults") as resp:
            assert await resp.json() == []


async def test_a_hung_request_is_held_until_the_client_gives_up(cluster: RunningCluster) -> None:
    held = cluster.ctx.faults.add(FaultRule(path="/namespaces", hang=True))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with http.get(
                f"{cluster.url}/api/v1/namespaces", timeout=aiohttp.ClientTimeout(total=0.3)
            ):
                pass
        async with http.get(f"{cluster.url}/api/v1/namespaces") as resp:
            assert resp.status == 200
    assert held.hits == 1
