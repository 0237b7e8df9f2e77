"""The dev overlay against the running system: the simulated cluster (in-process, real HTTP), the
real controller and the real gateway (in-process, each behind a recording proxy), real Redis,
and real `kubectl apply`.

The dev overlay's CRD, model Deployment, Service and InferenceScaler, applied to the simulated
cluster, are picked up by the controller: it writes the scaler's status and, when a burst queues
up at the gateway, scales that very Deployment; every API call either part makes is permitted by
its Role. (The full least-privilege check, including the GPU-node path and "nothing granted that
is not used", runs on docker-compose's topology in test_compose_run.py.) The request-to-RBAC
mapping and the authorizer are tested here too."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from controller import crd
from controller.config import ControllerConfig
from controller.kube import connect_api
from controller.loop import Controller
from gateway.server import serve
from gateway.settings import GatewaySettings, ModelRoute
from sim.cluster import ClusterOptions, NodePoolConfig, RunningCluster, start_cluster
from surgescale.events import close, connect
from tests.manifests.kube import Obj, find, render, renderers
from tests.manifests.rbac import (
    Attributes,
    Authorizer,
    Call,
    RecordingProxy,
    attributes,
    denied_calls,
)

NS = "surgescale"
MODEL = "llama3-8b"


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, what: str
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def kubectl(kubeconfig: Path, *args: str) -> str:
    """Run kubectl without blocking the loop the simulated cluster serves from."""
    proc = await asyncio.create_subprocess_exec(
        renderers()[0].path,
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={kubeconfig.parent / 'kube-cache'}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {err.decode()}"
    return out.decode()


def _objects_file(objs: list[Obj], path: Path) -> Path:
    path.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    return path


@dataclass
class Stack:
    cluster: RunningCluster
    admin: Path
    api: client.ApiClient
    tmp: Path
    redis_url: str
    prefix: str
    proxies: dict[str, RecordingProxy] = field(default_factory=dict)
    controller: Controller | None = None
    gateway_url: str = ""
    _gateway_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _gateway_task: asyncio.Task[None] | None = None

    async def proxy_kubeconfig(self, who: str) -> Path:
        proxy = RecordingProxy(self.cluster.url)
        await proxy.start()
        self.proxies[who] = proxy
        path = self.tmp / f"{who}.kubeconfig"
        path.write_text(yaml.safe_dump(proxy.kubeconfig(NS)))
        return path

    async def start_controller(self) -> Controller:
        config = ControllerConfig(
            redis_url=self.redis_url,
            kubeconfig=str(await self.proxy_kubeconfig("controller")),
            namespace=NS,
            stream_prefix=self.prefix,
            identity="controller-0",
            lease_namespace=NS,
            lease_duration_s=2.0,
            lease_retry_s=0.25,
            tick_s=0.25,
            status_interval_s=0.25,
            http_port=None,
        )
        self.controller = Controller(config)
        await self.controller.start()
        return self.controller

    async def start_gateway(self) -> str:
        settings = GatewaySettings(
            host="127.0.0.1",
            port=0,
            kubeconfig=str(await self.proxy_kubeconfig("gateway")),
            namespace=NS,
            models=[ModelRoute(name=MODEL, service=MODEL, port_name="http")],
            redis_url=self.redis_url,
            events_prefix=self.prefix,
            max_queue_wait_s=60,
            drain_timeout_s=1,
            allow_unauthenticated=True,
        )
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._gateway_task = asyncio.create_task(
            serve(
                settings,
                stop=self._gateway_stop,
                handle_signals=False,
                on_listening=listening.set_result,
            )
        )
        self.gateway_url = await asyncio.wait_for(listening, timeout=15)
        return self.gateway_url

    async def replicas(self) -> int:
        dep = await client.AppsV1Api(self.api).read_namespaced_deployment(MODEL, NS)
        return int(dep.spec.replicas or 0)

    async def ready_replicas(self) -> int:
        dep = await client.AppsV1Api(self.api).read_namespaced_deployment(MODEL, NS)
        return int(dep.status.ready_replicas or 0) if dep.status else 0

    async def scaler_status(self) -> dict[str, Any]:
        obj = await client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            crd.GROUP, crd.VERSION, NS, crd.PLURAL, MODEL
        )
        status: dict[str, Any] = obj.get("status") or {}
        return status

    async def pool_replicas(self) -> int:
        pool = await client.CustomObjectsApi(self.api).get_cluster_custom_object(
            "karpenter.sh", "v1", "nodepools", "gpu"
        )
        return int(pool["spec"].get("replicas") or 0)

    async def burst(self, n: int) -> list[int]:
        """`n` concurrent completions through the gateway; their HTTP statuses."""
        body = {"model": MODEL, "prompt": "hello " * 200, "max_tokens": 64}

        async def one(session: aiohttp.ClientSession) -> int:
            async with session.post(f"{self.gateway_url}/v1/completions", json=body) as resp:
                await resp.read()
                return resp.status

        timeout = aiohttp.ClientTimeout(total=90)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return list(await asyncio.gather(*(one(session) for _ in range(n))))

    async def stop(self) -> None:
        self._gateway_stop.set()
        if self._gateway_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._gateway_task, timeout=10)
        if self.controller is not None:
            await self.controller.stop()
        for proxy in self.proxies.values():
            await proxy.stop()
        await self.api.close()
        await self.cluster.stop()


@contextlib.asynccontextmanager
async def stack(redis_url: str, tmp_path: Path, *, initial_nodes: int) -> AsyncIterator[Stack]:
    cluster = await start_cluster(
        ClusterOptions(
            speed=20.0,
            nodepools=(
                NodePoolConfig(
                    name="gpu", gpus_per_node=8, boot_seconds=20.0, replicas=initial_nodes
                ),
            ),
            container_start_s=0.1,
        )
    )
    admin = cluster.write_kubeconfig(tmp_path / "admin.kubeconfig", namespace=NS)
    api = await connect_api(str(admin))
    env = Stack(
        cluster=cluster,
        admin=admin,
        api=api,
        tmp=tmp_path,
        redis_url=redis_url,
        prefix=f"test-{uuid.uuid4().hex[:12]}",
    )
    try:
        yield env
    finally:
        await env.stop()
        redis = connect(redis_url)
        try:
            async for key in redis.scan_iter(match=f"{env.prefix}:*"):
                await redis.delete(key)
        finally:
            await close(redis)


def _dev_objects() -> list[Obj]:
    """The dev overlay's own CRD, model Deployment and Service and InferenceScaler, unchanged."""
    dev = render("overlays/dev")
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        find(dev, "CustomResourceDefinition", "inferencescalers.surgescale.io"),
        find(dev, "Deployment", MODEL),
        find(dev, "Service", MODEL),
        find(dev, "InferenceScaler", MODEL),
    ]


async def test_dev_overlay_is_picked_up_by_the_controller(redis_url: str, tmp_path: Path) -> None:
    async with stack(redis_url, tmp_path, initial_nodes=1) as env:
        objs = _dev_objects()
        crds = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
        rest = [o for o in objs if o["kind"] != "CustomResourceDefinition"]
        # As on a real cluster: the CRD must be served before an object of its kind is sent.
        await kubectl(env.admin, "apply", "-f", str(_objects_file(crds, tmp_path / "crd.yaml")))
        await kubectl(env.admin, "apply", "-f", str(_objects_file(rest, tmp_path / "dev.yaml")))
        spec = find(render("overlays/dev"), "InferenceScaler", MODEL)["spec"]

        async def model_ready() -> bool:
            return await env.ready_replicas() >= 1

        await eventually(model_ready, what="the dev Deployment's simulated pod to be Ready")
        await env.start_controller()

        async def picked_up() -> dict[str, Any] | None:
            status = await env.scaler_status()
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            return status if conditions.get("SpecValid") == "True" else None

        status = await eventually(picked_up, what="the controller to accept the dev scaler")
        assert status["readyReplicas"] >= 1
        await env.start_gateway()
        statuses = await env.burst(120)
        assert statuses.count(200) == len(statuses), statuses

        async def scaled_up() -> int:
            n = await env.replicas()
            return n if n > 1 else 0

        replicas = await eventually(scaled_up, what="a scale-up of the dev Deployment")
        assert replicas <= spec["maxReplicas"]
        status = await env.scaler_status()
        assert status["desiredReplicas"] > 1
        # strategy None in dev: the controller leaves the NodePool alone.
        assert await env.pool_replicas() == 1
        # Everything the two parts asked the API server for is permitted by their Roles.
        manifests = render("overlays/dev")
        for who, account in (
            ("controller", "surgescale-controller"),
            ("gateway", "surgescale-gateway"),
        ):
            rbac = Authorizer.for_service_account(manifests, account, NS)
            calls = env.proxies[who].calls
            assert calls, f"the {who} made no API call through its proxy"
            assert denied_calls(rbac, calls) == [], who


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        (
            "GET",
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            "",
            "get apps/deployments/scale in ns name=d",
        ),
        (
            "PATCH",
            "/apis/karpenter.sh/v1/nodepools/gpu/scale",
            "",
            "patch karpenter.sh/nodepools/scale (cluster) name=gpu",
        ),
        ("GET", "/api/v1/pods", "watch=true&resourceVersion=1", "watch core/pods (cluster)"),
        ("GET", "/api/v1/nodes", "labelSelector=x&watch=True", "watch core/nodes (cluster)"),
        ("GET", "/api/v1/nodes", "watch=false", "list core/nodes (cluster)"),
        ("GET", "/api/v1/namespaces/ns/events", "", "list core/events in ns"),
        (
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases",
            "",
            "create coordination.k8s.io/leases in ns",
        ),
        ("GET", "/apis", "", "get /apis"),
    ],
)
def test_request_attributes(method: str, path: str, query: str, expected: str) -> None:
    assert str(attributes(Call(method, path, query))) == expected


def test_authorizer_can_deny() -> None:
    rbac = Authorizer.for_service_account(render("overlays/dev"), "surgescale-gateway", NS)
    assert rbac.allowed(
        Attributes(verb="watch", group="discovery.k8s.io", resource="endpointslices", namespace=NS)
    )
    assert not rbac.allowed(
        Attributes(
            verb="watch", group="discovery.k8s.io", resource="endpointslices", namespace="other"
        )
    )
    assert not rbac.allowed(
        Attributes(
            verb="get", group="discovery.k8s.io", resource="endpointslices", namespace=NS, name="x"
        )
    )
    assert not rbac.allowed(Attributes(verb="list", resource="secrets", namespace=NS))
    assert not rbac.allowed(Attributes(verb="post", path="/apis"))
