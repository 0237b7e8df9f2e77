"""CapacityBuffers on the simulated cluster: the real CRD is served, Karpenter keeps the chunks'
room warm (nodes launched for them, not consolidated while needed, replaced when real pods take
the room), and a cluster started without the CRD does not serve the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from sim.cluster import NodePoolConfig, RunningCluster
from sim.cluster.store import Obj

from .conftest import ClusterFactory, eventually
from .test_lifecycles import create, model_deployment, ready_pods

GROUP, VERSION, PLURAL = "autoscaling.x-k8s.io", "v1beta1", "capacitybuffers"


def template(name: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name, "namespace": "default"},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "containers": [
                    {
                        "name": "chunk",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                    }
                ]
            },
        },
    }


def buffer(name: str, replicas: int, tmpl: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CapacityBuffer",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"podTemplateRef": {"name": tmpl}, "replicas": replicas},
    }


async def _api(cluster: RunningCluster, tmp_path: Path) -> client.ApiClient:
    path = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    return client.ApiClient(cfg)


def _claims(cluster: RunningCluster) -> list[Obj]:
    return list(cluster.store.items(cluster.resource("karpenter.sh", "v1", "nodeclaims")))


def _ready_nodes(cluster: RunningCluster) -> int:
    nodes = cluster.store.items(cluster.resource("", "v1", "nodes"))
    return sum(
        1
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    )


async def test_buffer_chunks_get_warm_nodes_that_real_pods_use_and_karpenter_refills(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = await make_cluster(
        nodepools=(
            NodePoolConfig(
                name="burst",
                gpus_per_node=2,
                boot_seconds=20,
                replicas=None,
                limit_gpus=8,
                consolidate_after="10s",
            ),
        )
    )
    async with await _api(cluster, tmp_path) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        await core.create_namespaced_pod_template("default", template("chunk", 1))  # type: ignore[arg-type]
        await custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, buffer("warm", 3, "chunk")
        )
        # 3 one-GPU chunks on 2-GPU nodes: two nodes, Ready with nothing on them, and they stay.
        await eventually(lambda: _ready_nodes(cluster) == 2, what="two warm nodes for 3 chunks")

        async def read() -> dict[str, Any]:
            obj: dict[str, Any] = await custom.get_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, "warm"
            )
            return obj

        async def provisioned() -> bool:
            conds = (await read()).get("status", {}).get("conditions") or []
            return any(c["reason"] == "CapacityReady" for c in conds)

        await eventually(provisioned, what="the buffer's Provisioning condition")
        obj = await read()
        assert obj["status"]["replicas"] == 3
        assert obj["status"]["podTemplateRef"] == {"name": "chunk"}
        assert {c["type"]: c["status"] for c in obj["status"]["conditions"]} == {
            "Provisioning": "True",
            "ReadyForProvisioning": "True",
        }
        await cluster.clock.sleep(30)  # past consolidateAfter: the empty nodes are kept
        assert len(_claims(cluster)) == 2
        # Two real pods take warm room at once (no node boot), Karpenter launches for the chunks.
        create(cluster, "apps", "deployments", model_deployment("real", 2, model=None, load_s=1))
        await eventually(lambda: len(ready_pods(cluster, "real")) == 2, what="real pods Ready")
        assert _ready_nodes(cluster) == 2, "the real pods did not wait for a node"
        await eventually(lambda: len(_claims(cluster)) == 3, what="a node to refill the buffer")
        # Buffer down to 0: the node nobody needs is consolidated.
        await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "warm",
            {"spec": {"replicas": 0}},
            _content_type="application/merge-patch+json",
        )
        await eventually(lambda: len(_claims(cluster)) == 1, timeout=20, what="consolidation")


async def test_missing_template_is_a_condition_and_no_node(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = await make_cluster(
        nodepools=(NodePoolConfig(name="burst", gpus_per_node=2, boot_seconds=5, replicas=None),)
    )
    async with await _api(cluster, tmp_path) as api:
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, buffer("warm", 2, "nope")
        )

        async def not_found() -> bool:
            obj = await custom.get_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, "warm"
            )
            return any(
                c["type"] == "ReadyForProvisioning"
                and c["status"] == "False"
                and c["reason"] == "PodTemplateNotFound"
                for c in (obj.get("status") or {}).get("conditions") or []
            )

        await eventually(not_found, what="ReadyForProvisioning=False: PodTemplateNotFound")
        await cluster.clock.sleep(5)
        assert _claims(cluster) == []


async def test_cluster_without_the_crd_does_not_serve_capacitybuffers(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = await make_cluster(capacity_buffers=False)
    async with await _api(cluster, tmp_path) as api:
        custom = client.CustomObjectsApi(api)
        with pytest.raises(ApiException) as info:
            await custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
        assert info.value.status == 404
