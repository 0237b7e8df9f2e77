"""The KEDA-style loop's shell against the simulated cluster and a simulated vLLM pod, over HTTP.

The threshold is set far below any real TTFT (1 ms), so the first requests the pod serves must
make the loop scrape them, compute a p95 above target, and PATCH the Deployment's scale — as far
as the HPA's scale-up policy and maxReplicas allow — on its own cadence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from sim.baselines.hpa import KedaSpec
from sim.baselines.keda_live import KedaBaseline, running
from sim.cluster import ClusterOptions, NodePoolConfig, RunningCluster, start_cluster
from sim.demo import commands, objects, startup
from sim.localredis.server import free_port

SPEED = 20.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[RunningCluster, k8s.ApiClient]]:
    running_cluster = await start_cluster(
        ClusterOptions(
            speed=SPEED,
            nodepools=(NodePoolConfig(name="gpu", gpus_per_node=8, boot_seconds=20, replicas=1),),
            container_start_s=0.1,
            pod_port=free_port(),
        )
    )
    api = await startup.api_client(running_cluster.write_kubeconfig(tmp_path / "kubeconfig"))
    try:
        yield running_cluster, api
    finally:
        await api.close()
        await running_cluster.stop()


async def _pod_url(api: k8s.ApiClient, setup: objects.ModelSetup) -> str:
    slices = await k8s.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        setup.namespace, label_selector=f"kubernetes.io/service-name={setup.service}"
    )
    for item in slices.items:
        for endpoint in item.endpoints or []:
            if endpoint.addresses and (endpoint.conditions is None or endpoint.conditions.ready):
                return f"http://{endpoint.addresses[0]}:{item.ports[0].port}"
    raise AssertionError("no ready endpoint")


async def test_keda_loop_scrapes_and_scales(
    cluster: tuple[RunningCluster, k8s.ApiClient],
) -> None:
    running_cluster, api = cluster
    setup = objects.ModelSetup(
        model_load_s=1.0, max_replicas=3, pod_port=running_cluster.options.pod_port
    )
    await objects.apply(api, setup, ours=False, speed=SPEED)
    await startup.wait_ready_replicas(api, setup, timeout_s=30)
    url = ""
    for _ in range(100):  # the EndpointSlice follows the pod's readiness
        with contextlib.suppress(AssertionError):
            url = await _pod_url(api, setup)
            break
        await asyncio.sleep(0.05)
    assert url, "the model's pod never appeared in its EndpointSlice"

    spec = KedaSpec(threshold_s=0.001, min_replicas=1, max_replicas=3).scaled(SPEED)
    apps = k8s.AppsV1Api(api)
    async with aiohttp.ClientSession() as http:
        baseline = KedaBaseline(
            api=api,
            http=http,
            target=commands.baseline_target(setup),
            spec=spec,
        )
        body = {"model": setup.model, "prompt": "hello " * 50, "max_tokens": 2}
        async with running(baseline):
            for _ in range(100):
                async with http.post(f"{url}/v1/completions", json=body) as resp:
                    assert resp.status == 200, await resp.text()
                dep = await apps.read_namespaced_deployment(setup.deployment, setup.namespace)
                if dep.spec.replicas == 3:
                    break
                await asyncio.sleep(0.1)
    assert dep.spec.replicas == 3, baseline.status
    assert baseline.status.scrapes >= 2
    assert baseline.status.targets >= 1
    assert baseline.status.metric_s is not None
    assert baseline.status.metric_s > spec.threshold_s
    first = baseline.status.decisions[0]
    assert (first[1], first[2]) == (1, 3), baseline.status.decisions
    assert "ready" in first[3]
