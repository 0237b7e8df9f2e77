"""The informer's relist after each watch timeout announces only what changed (issue 17): with
1,000 Deployments, re-announcing every one of them each minute asked the controller to evaluate
every InferenceScaler at once, with nothing about them changed."""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client

from controller.kube import Informer
from controller.objects import Deployment
from tests.controller.conftest import NS, Sim, deployment, eventually


async def test_a_relist_announces_changed_objects_only(sim: Sim) -> None:
    apps = client.AppsV1Api(sim.api)
    for name in ("still", "moving"):
        await apps.create_namespaced_deployment(NS, deployment(name, 0))  # type: ignore[arg-type]
    seen: list[tuple[str, str]] = []
    informer: Informer[Deployment] = Informer(
        "deployments",
        apps.list_namespaced_deployment,
        NS,
        handler=lambda kind, obj: seen.append((kind, Informer.key(obj)[1])),
        watch_timeout_s=1,  # a relist about every second
    )
    task = asyncio.create_task(informer.run())
    try:

        async def relisted(times: int) -> bool:
            return seen.count(("SYNC", "")) >= times

        await eventually(lambda: relisted(1), what="the first list")
        assert sorted(seen) == [("ADDED", "moving"), ("ADDED", "still"), ("SYNC", "")]
        await eventually(lambda: relisted(3), what="two relists")
        # A change made between two watches (the watch may or may not see it) still arrives.
        await apps.patch_namespaced_deployment_scale("moving", NS, {"spec": {"replicas": 2}})

        async def saw_change() -> bool:
            return any(k == "MODIFIED" and n == "moving" for k, n in seen)

        await eventually(saw_change, what="the change of the moving Deployment")
        done = seen.count(("SYNC", ""))
        await eventually(lambda: relisted(done + 2), what="two more relists")
        assert ("MODIFIED", "still") not in seen  # relisted several times, never changed
        assert informer.objects[(NS, "moving")]["spec"]["replicas"] == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
