"""EndpointSlice discovery against the simulated Kubernetes API (kubernetes_asyncio over HTTP):
scale from zero (held, then released when the first pod turns Ready), spreading over new pods,
and a pod leaving the slice (no new work while its in-flight stream finishes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from gateway.discovery import SliceTracker, endpoints_of
from sim.cluster.cluster import ClusterOptions, NodePoolConfig, RunningCluster, start_cluster
from sim.localredis.server import free_port
from surgescale.events import EventType, RedisClient, StreamKeys
from tests.gateway.conftest import (
    MODEL,
    Harness,
    events_of,
    events_once_complete,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)
SERVICE = "llama"


def test_endpoints_of_slice_conditions() -> None:
    obj = {
        "metadata": {"name": "s1"},
        "ports": [{"name": "metrics", "port": 9}, {"name": "http", "port": 8000}],
        "endpoints": [
            {"addresses": ["127.1.0.1"], "conditions": {"ready": True}},
            {"addresses": ["127.1.0.2"], "conditions": {"ready": False}},
            {"addresses": ["127.1.0.3"]},  # absent = ready
            {"addresses": ["127.1.0.4"], "conditions": {"ready": True, "terminating": True}},
            {"addresses": []},
        ],
    }
    assert endpoints_of(obj, port_name="http") == {
        "http://127.1.0.1:8000": True,
        "http://127.1.0.2:8000": False,
        "http://127.1.0.3:8000": True,
        "http://127.1.0.4:8000": False,
    }
    assert endpoints_of(obj, port_name="absent") == {}


def test_slice_tracker_merges_slices_and_reports_changes_only() -> None:
    seen: list[dict[str, bool]] = []
    tracker = SliceTracker("m", port_name=None, on_pods=lambda _m, pods: seen.append(pods))

    def slice_(name: str, *ips: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "ports": [{"port": 80}],
            "endpoints": [{"addresses": [ip]} for ip in ips],
        }

    tracker.replace([slice_("a", "127.0.0.2")])
    tracker.apply("ADDED", slice_("b", "127.0.0.3"))
    tracker.apply("MODIFIED", slice_("b", "127.0.0.3"))  # no change, no report
    tracker.apply("DELETED", slice_("a"))
    assert seen == [
        {"http://127.0.0.2:80": True},
        {"http://127.0.0.2:80": True, "http://127.0.0.3:80": True},
        {"http://127.0.0.3:80": True},
    ]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[RunningCluster, Path, int]]:
    pod_port = free_port()
    running = await start_cluster(
        ClusterOptions(
            speed=10.0,
            nodepools=(NodePoolConfig(name="gpu", replicas=1, boot_seconds=1.0, gpus_per_node=8),),
            pod_port=pod_port,
            container_start_s=0.1,
            default_load_s=1.0,
        )
    )
    try:
        yield running, running.write_kubeconfig(tmp_path / "kubeconfig"), pod_port
    finally:
        await running.stop()


async def _api(kubeconfig: Path) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return k8s.ApiClient(configuration)


def _deployment(replicas: int, port: int) -> Any:
    labels = {"app": SERVICE}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": SERVICE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "surgescale.io/model": MODEL,
                        "surgescale.io/load-seconds": "2",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": 60,
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai",
                            "ports": [{"name": "http", "containerPort": port}],
                            "resources": {"limits": {"nvidia.com/gpu": 1}},
                        }
                    ],
                },
            },
        },
    }


async def test_scale_from_zero_and_pod_leaving(
    harness: Harness,
    redis: RedisClient,
    keys: StreamKeys,
    cluster: tuple[RunningCluster, Path, int],
) -> None:
    _, kubeconfig, pod_port = cluster
    api = await _api(kubeconfig)
    try:
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        service: Any = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE},
            "spec": {
                "selector": {"app": SERVICE},
                "ports": [{"name": "http", "port": 80, "targetPort": pod_port}],
            },
        }
        await core.create_namespaced_service("default", service)
        gw = await harness.gateway(
            models=[{"name": MODEL, "service": SERVICE}], kubeconfig=str(kubeconfig)
        )
        queue = gw.state.scheduler.queues[MODEL]
        client = gw.client()
        # Scale from zero: the request is held, the controller hears of it at once.
        held = asyncio.create_task(client.completions.create(model=MODEL, prompt="x", max_tokens=3))
        await events_of(redis, keys, {"enqueue"}, timeout=5)
        assert queue.ready_pods == 0
        await apps.create_namespaced_deployment("default", _deployment(1, pod_port))
        await wait_for(
            lambda: queue.ready_pods == 1, timeout=20, what="the first pod via the slice"
        )
        reply = await asyncio.wait_for(held, 20)
        assert reply.choices[0].text
        events = await events_of(redis, keys, {"dispatch"})
        dispatch = next(e for e in events if e.type is EventType.DISPATCH)
        assert dispatch.pod is not None
        assert dispatch.pod.startswith("http://127.")
        assert dispatch.pod.endswith(f":{pod_port}")
        first_pod = dispatch.pod

        # A second pod joins; then the first leaves while streaming: its stream finishes.
        await apps.patch_namespaced_deployment_scale(SERVICE, "default", {"spec": {"replicas": 2}})
        await wait_for(lambda: queue.ready_pods == 2, timeout=30, what="two ready pods")
        body = {"model": MODEL, "prompt": "x", "max_tokens": 200, "stream": True}
        async with aiohttp.ClientSession() as http:
            streams = [await http.post(gw.url + "/v1/completions", json=body) for _ in range(2)]
            on_first = queue.pods[first_pod].outstanding
            assert on_first == 1  # least outstanding: one stream per pod
            pods = await core.list_namespaced_pod("default", label_selector=f"app={SERVICE}")
            ip = first_pod.split("//")[1].split(":")[0]
            victim = next(p.metadata.name for p in pods.items if p.status.pod_ip == ip)
            await core.delete_namespaced_pod(victim, "default")
            await wait_for(
                lambda: queue.pods.get(first_pod) is None or queue.pods[first_pod].leaving,
                timeout=10,
                what="the deleted pod to leave the gateway's set",
            )
            late = await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
            assert late.choices[0].text
            bodies = [await s.read() for s in streams]
            for s in streams:
                s.release()
        assert all(b.rstrip().endswith(b"data: [DONE]") for b in bodies)
        await wait_for(lambda: first_pod not in queue.pods, what="the idle leaving pod to go")
        events = await events_once_complete(redis, keys, 4)
        completes = [e for e in events if e.type is EventType.COMPLETE]
        dispatches = [e for e in events if e.type is EventType.DISPATCH]
        assert len(completes) == 4
        assert all(e.status == 200 for e in completes)
        assert dispatches[3].pod != first_pod  # the late one went to the pod that stayed
    finally:
        await api.close()
