"""A terminating pod, as Kubernetes reports it, gets no new work and finishes its streams.

The simulated EndpointSlice keeps a deleted pod listed with `terminating: true, ready: false`
until the pod is gone (what the EndpointSlice controller does since Kubernetes 1.26); the
gateway, watching the slices over real HTTP, sends that pod nothing new while the stream it
already carries runs to its end.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client

from gateway.app import build_app
from gateway.settings import GatewaySettings, ModelRoute
from gateway.state import STATE
from sim.cluster import RunningCluster

from .conftest import eventually
from .test_lifecycles import create, model_deployment, service

MODEL = "llama3-8b"


def _endpoints(cluster: RunningCluster, svc: str) -> list[dict[str, Any]]:
    rt = cluster.resource("discovery.k8s.io", "v1", "endpointslices")
    return [
        e
        for s in cluster.store.items(rt)
        if s["metadata"]["labels"].get("kubernetes.io/service-name") == svc
        for e in s.get("endpoints") or []
    ]


async def test_terminating_pod_is_listed_as_terminating_and_gets_nothing_new(
    cluster: RunningCluster, api: client.ApiClient, tmp_path: Path
) -> None:
    create(cluster, "", "services", service("m"))
    create(cluster, "apps", "deployments", model_deployment("m", 2, grace_s=4000, load_s=2))
    await eventually(
        lambda: sum(e["conditions"]["ready"] for e in _endpoints(cluster, "m")) == 2,
        what="two ready endpoints",
    )
    settings = GatewaySettings(
        port=0,
        redis_url=None,
        allow_unauthenticated=True,
        kubeconfig=str(cluster.write_kubeconfig(tmp_path / "kubeconfig")),
        models=[ModelRoute(name=MODEL, service="m", port_name="http")],
        pod_concurrency=8,
    )
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    queue = app[STATE].scheduler.queue(MODEL)
    try:
        await eventually(lambda: queue.ready_pods == 2, what="gateway sees two ready pods")
        body = {"model": MODEL, "prompt": "hi " * 20, "max_tokens": 300, "stream": True}
        async with (
            aiohttp.ClientSession() as http,
            http.post(url + "/v1/completions", json=body) as stream,
        ):
            assert stream.status == 200
            assert (await stream.content.readline()).startswith(b"data:")
            busy = next(p for p in queue.pods.values() if p.outstanding == 1)
            ip = busy.url.split("//")[1].split(":")[0]
            pod_name = next(
                e["targetRef"]["name"] for e in _endpoints(cluster, "m") if e["addresses"] == [ip]
            )
            await client.CoreV1Api(api).delete_namespaced_pod(pod_name, "default")

            def listed_terminating() -> bool:
                conds = [
                    e["conditions"] for e in _endpoints(cluster, "m") if e["addresses"] == [ip]
                ]
                return conds == [{"ready": False, "serving": False, "terminating": True}]

            await eventually(listed_terminating, what="endpoint listed as terminating")
            await eventually(lambda: not busy.eligible, what="gateway stops using the pod")
            sent_before = busy.dispatched
            short = {"model": MODEL, "prompt": "x", "max_tokens": 2}
            for _ in range(6):
                async with http.post(url + "/v1/completions", json=short) as r:
                    assert r.status == 200, await r.text()
            assert busy.dispatched == sent_before, "a terminating pod got new work"
            assert not stream.content.at_eof(), "the stream ended before the check"
            rest = await asyncio.wait_for(stream.content.read(), 30)
        assert rest.rstrip().endswith(b"data: [DONE]"), "the in-flight stream finished"
    finally:
        await runner.cleanup()
