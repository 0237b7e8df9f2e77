"""`capacity.strategy: CapacityBuffer` against the simulated cluster (real HTTP, real Redis): the
controller sizes the buffer and the simulated Karpenter keeps that room warm; on a cluster
without the CapacityBuffer CRD the scaler gets a condition and the model still scales."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from controller import crd
from controller.kube import connect_api
from sim.cluster import ClusterOptions, NodePoolConfig, start_cluster
from sim.cluster.cluster import buffer_crd_path
from sim.localredis.server import free_port
from surgescale.events import StreamKeys
from tests.controller.conftest import NS, OPT_IN, Gateway, Sim, eventually
from tests.controller.test_integration import _ready_leader

GROUP, VERSION, PLURAL = "autoscaling.x-k8s.io", "v1beta1", "capacitybuffers"

BUFFER_CAPACITY: dict[str, Any] = {
    "strategy": "CapacityBuffer",
    "capacityBufferRef": {"name": "llama-warm"},
    "gpusPerReplica": 1,
    "gpusPerNode": 2,
    "headroomReplicas": 1,
    "billing": "GPU",
}


async def _sim(redis_url: str, keys: StreamKeys, tmp_path: Path, *, buffers: bool) -> Sim:
    cluster = await start_cluster(
        ClusterOptions(
            speed=20.0,
            nodepools=(
                NodePoolConfig(
                    name="gpu", gpus_per_node=2, boot_seconds=4.0, replicas=None, limit_gpus=16
                ),
            ),
            default_load_s=1.0,
            container_start_s=0.1,
            pod_port=free_port(),
            capacity_buffers=buffers,
        )
    )
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    api = await connect_api(str(kubeconfig))
    await client.ApiextensionsV1Api(api).create_custom_resource_definition(crd.crd_manifest())  # type: ignore[arg-type]
    return Sim(cluster=cluster, kubeconfig=kubeconfig, api=api, redis_url=redis_url, keys=keys)


@pytest.fixture
async def make_sim(
    redis_url: str, keys: StreamKeys, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Sim] = []

    async def make(*, buffers: bool) -> Sim:
        env = await _sim(redis_url, keys, tmp_path, buffers=buffers)
        made.append(env)
        return env

    try:
        yield make
    finally:
        for env in made:
            for ctl in env.controllers:
                await ctl.stop()
            await env.api.close()
            await env.cluster.stop()


async def _create_buffer(sim: Sim) -> None:
    await client.CoreV1Api(sim.api).create_namespaced_pod_template(
        NS,
        {  # type: ignore[arg-type]
            "metadata": {"name": "llama-chunk"},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "chunk",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ]
                }
            },
        },
    )
    await sim.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CapacityBuffer",
            "metadata": {"name": "llama-warm", "labels": {OPT_IN: "true"}},
            "spec": {"podTemplateRef": {"name": "llama-chunk"}, "replicas": 0},
        },
    )


async def _buffer_replicas(sim: Sim) -> int:
    obj = await sim.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "llama-warm")
    return int(obj["spec"].get("replicas") or 0)


async def _condition(sim: Sim, name: str, kind: str) -> dict[str, Any]:
    for cond in (await sim.scaler_status(name)).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


async def test_controller_sizes_the_buffer_and_karpenter_keeps_the_room_warm(
    make_sim: Callable[..., Any], gateway_factory: Callable[[], Gateway]
) -> None:
    sim: Sim = await make_sim(buffers=True)
    await _create_buffer(sim)
    await sim.create_model("llama", replicas=1, capacity=BUFFER_CAPACITY)
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        # Idle at 1 replica: nodes = ceil((1 + 1) / 2) = 1, whose spare GPU is one warm chunk.
        await eventually(lambda: _is(_buffer_replicas(sim), 1), what="one chunk when idle")
        # Karpenter keeps the model pod's node and the chunk's room: 2 GPUs, one 2-GPU node.
        await eventually(lambda: _is(sim.ready_nodes(), 1), timeout=20, what="one warm node")
        gw.enqueue(40)
        await eventually(lambda: _is(sim.replicas("llama"), 6), timeout=5, what="scale-up to 6")
        # 6 replicas + 1 headroom -> 4 nodes = 8 GPUs, 2 of them warm chunks.
        await eventually(lambda: _is(_buffer_replicas(sim), 2), what="two chunks for 4 nodes")
        # 6 pods + 2 chunks = 8 GPUs: four nodes Ready, and the pods Ready on them.
        await eventually(lambda: _is(sim.ready_nodes(), 4), timeout=30, what="four nodes")

        async def status() -> dict[str, Any] | None:
            st = await sim.scaler_status("llama")
            return st if st.get("warmReplicas") == 2 else None

        st = await eventually(status, what="status with warmReplicas")
        assert st["desiredNodes"] == 4
        capacity = await _condition(sim, "llama", "CapacityUnavailable")
        assert capacity["status"] == "False", capacity
    reasons = [r for r, _ in await sim.events("llama")]
    assert "CapacityBufferScaled" in reasons


async def test_without_the_crd_a_condition_says_so_and_the_model_still_scales(
    make_sim: Callable[..., Any], gateway_factory: Callable[[], Gateway]
) -> None:
    sim: Sim = await make_sim(buffers=False)
    await sim.create_model("llama", replicas=1, capacity=BUFFER_CAPACITY)
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)

        async def missing() -> dict[str, Any] | None:
            cond = await _condition(sim, "llama", "CapacityUnavailable")
            return cond if cond.get("reason") == "CapacityBufferCRDMissing" else None

        cond = await eventually(missing, what="CapacityUnavailable: CapacityBufferCRDMissing")
        assert cond["status"] == "True"
        assert "install the CapacityBuffer CRD" in cond["message"]
        ready = await _condition(sim, "llama", "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "CapacityBufferCRDMissing")
        gw.enqueue(40)
        await eventually(lambda: _is(sim.replicas("llama"), 6), timeout=5, what="scale-up to 6")
        assert ctl.health.live()[0], ctl.health.live()
        # Installing the CRD (and the buffer) heals it: the write is tried again later.
        assert ctl.actuator is not None
        ctl.actuator.recheck_after_s = 0.5
        crd_doc = yaml.safe_load(buffer_crd_path().read_text())
        await client.ApiextensionsV1Api(sim.api).create_custom_resource_definition(crd_doc)
        await _create_buffer(sim)
        await eventually(lambda: _is(_buffer_replicas(sim), 2), what="the buffer sized at last")

        async def healed() -> bool:
            cond = await _condition(sim, "llama", "CapacityUnavailable")
            return cond.get("reason") == "CapacityAvailable"

        await eventually(healed, what="CapacityUnavailable back to False")
    events = await sim.events("llama")
    assert any(r == "CapacityBufferCRDMissing" for r, _ in events), events


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)
