"""Fixtures for the controller's integration tests: the simulated cluster (in-process, real HTTP),
our CRD applied to it, a model Deployment, and controllers wired to real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from controller import crd
from controller.config import ControllerConfig
from controller.kube import connect_api
from controller.loop import Controller
from sim.cluster import ClusterOptions, NodePoolConfig, RunningCluster, start_cluster
from sim.localredis.server import free_port
from surgescale.events import Event, EventProducer, EventType, RedisClient, StreamKeys

MODEL = "llama3-8b"
NS = "default"
OPT_IN = "surgescale.io/scalable"


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 15.0, what: str = "condition"
) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def deployment(name: str, replicas: int, *, gpus: int = 1, load_s: float = 1.0) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {OPT_IN: "true"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {
                        "surgescale.io/model": MODEL,
                        "surgescale.io/load-seconds": str(load_s),
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ]
                },
            },
        },
    }


def scaler(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "scaleTargetRef": {"name": name},
        "minReplicas": 1,
        "maxReplicas": 6,
        "scaleDown": {"delaySeconds": 600},
        # The loop is exercised with the per-GPU rules (GPU billing, a fixed concurrency, the
        # queue drained within the TTFT SLO); test_policy covers node billing and the rest.
        "target": {"concurrencyPerReplica": 32, "drainHorizonSeconds": 1},
        "capacity": {
            "strategy": "StaticNodePool",
            "nodePoolRef": {"name": "gpu"},
            "gpusPerReplica": 1,
            "gpusPerNode": 2,
            "billing": "GPU",
        },
    }
    body.update(spec)
    return {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": NS},
        "spec": body,
    }


@dataclass
class Sim:
    """A running simulated cluster with our CRD, and clients for the test to use."""

    cluster: RunningCluster
    kubeconfig: Path
    api: client.ApiClient
    redis_url: str
    keys: StreamKeys
    controllers: list[Controller] = field(default_factory=list)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    async def create_model(self, name: str, *, replicas: int = 1, **spec: Any) -> None:
        await self.apps.create_namespaced_deployment(NS, deployment(name, replicas))  # type: ignore[arg-type]
        await self.custom.create_namespaced_custom_object(
            crd.GROUP, crd.VERSION, NS, crd.PLURAL, scaler(name, **spec)
        )

    async def replicas(self, name: str) -> int:
        dep = await self.apps.read_namespaced_deployment(name, NS)
        return int(dep.spec.replicas or 0)

    async def pool_replicas(self, name: str = "gpu") -> int:
        pool = await self.custom.get_cluster_custom_object("karpenter.sh", "v1", "nodepools", name)
        return int(pool["spec"].get("replicas") or 0)

    async def ready_nodes(self, pool: str = "gpu") -> int:
        nodes = await client.CoreV1Api(self.api).list_node(
            label_selector=f"karpenter.sh/nodepool={pool}"
        )
        return sum(
            1
            for n in nodes.items
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        )

    async def scaler_status(self, name: str) -> dict[str, Any]:
        obj = await self.custom.get_namespaced_custom_object(
            crd.GROUP, crd.VERSION, NS, crd.PLURAL, name
        )
        status: dict[str, Any] = obj.get("status") or {}
        return status

    async def events(self, name: str) -> list[tuple[str, str]]:
        items = await client.CoreV1Api(self.api).list_namespaced_event(NS)
        return [
            (e.reason, e.message)
            for e in items.items
            if e.involved_object is not None and e.involved_object.name == name
        ]

    async def controller(self, identity: str, **overrides: Any) -> Controller:
        settings: dict[str, Any] = {
            "redis_url": self.redis_url,
            "kubeconfig": str(self.kubeconfig),
            "namespace": NS,
            "stream_prefix": self.keys.prefix,
            "identity": identity,
            "lease_name": f"lease-{self.keys.prefix}",
            "lease_duration_s": 2.0,
            "lease_retry_s": 0.25,
            "tick_s": 0.25,
            "status_interval_s": 0.25,
            "http_host": "127.0.0.1",
            "http_port": 0,  # any free port: several controllers run side by side
        }
        settings.update(overrides)  # any of these may be overridden
        settings["kubeconfig"] = str(settings["kubeconfig"])
        config = ControllerConfig(**settings)
        ctl = Controller(config)
        await ctl.start()
        self.controllers.append(ctl)
        return ctl


@pytest.fixture
async def sim(redis_url: str, keys: StreamKeys, tmp_path: Path) -> AsyncIterator[Sim]:
    cluster = await start_cluster(
        ClusterOptions(
            speed=20.0,
            nodepools=(NodePoolConfig(name="gpu", gpus_per_node=2, boot_seconds=4.0, replicas=0),),
            default_load_s=1.0,
            container_start_s=0.1,
            pod_port=free_port(),  # other test runs may share this machine's 127.x addresses
        )
    )
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    api = await connect_api(str(kubeconfig))
    await client.ApiextensionsV1Api(api).create_custom_resource_definition(crd.crd_manifest())  # type: ignore[arg-type]
    env = Sim(cluster=cluster, kubeconfig=kubeconfig, api=api, redis_url=redis_url, keys=keys)
    try:
        yield env
    finally:
        for ctl in env.controllers:
            await ctl.stop()
        await api.close()
        await cluster.stop()


class Gateway:
    """Emits events as a gateway would (snapshots on a timer), through the real producer."""

    def __init__(self, redis: RedisClient, keys: StreamKeys, name: str = "gw-1") -> None:
        self.producer = EventProducer(redis, keys=keys)
        self.name = name
        self.queue = 0
        self.in_flight = 0
        self.seq = 0
        self._task: asyncio.Task[None] | None = None
        self.interval_s = 0.2

    def _event(self, kind: EventType, **kw: Any) -> Event:
        return Event(type=kind, model=MODEL, gateway=self.name, ts_ms=int(time.time() * 1000), **kw)

    def snapshot(self) -> None:
        self.seq += 1
        self.producer.emit(
            self._event(
                EventType.SNAPSHOT,
                queue_depth=self.queue,
                in_flight=self.in_flight,
                seq=self.seq,
                interval_ms=int(self.interval_s * 1000),
            )
        )

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            self.queue += 1
            self.producer.emit(
                self._event(EventType.ENQUEUE, request_id=f"r{self.seq}-{self.queue}")
            )

    async def _snapshots(self) -> None:
        while True:
            self.snapshot()
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> Gateway:
        await self.producer.start()
        self._task = asyncio.create_task(self._snapshots())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.producer.close()


@pytest.fixture
def gateway_factory(redis: RedisClient, keys: StreamKeys) -> Callable[[], Gateway]:
    return lambda: Gateway(redis, keys)


def evaluations(ctl: Controller, model: str = MODEL) -> float:
    """How often `ctl` has evaluated the policy for `model` (its decisions counter): a test that
    checks nothing happens waits for a number of these, not for a time."""
    return sum(
        sample.value
        for family in ctl.metrics.decisions.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("model") == model
    )
