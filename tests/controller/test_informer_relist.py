"""The informer at scale (issue 17): an ended watch resumes from its last resourceVersion
without a list (a list of 1,000 objects is tens of ms of both event loops, and the library's
`Watch` built an SSL context per watch), and a relist (the safety net, or after a 410) announces
only what changed: re-announcing 1,000 Deployments asked the controller to evaluate every
InferenceScaler at once, with nothing about them changed."""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client

from controller.kube import Informer
from controller.objects import Deployment
from sim.cluster.faults import FaultRule
from tests.controller.conftest import NS, Sim, deployment, eventually
from tests.waiting import wait_until


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
        watch_timeout_s=1,
        relist_s=0.5,  # a relist after every watch
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


async def test_an_ended_watch_resumes_without_a_list(sim: Sim) -> None:
    apps = client.AppsV1Api(sim.api)
    await apps.create_namespaced_deployment(NS, deployment("moving", 0))  # type: ignore[arg-type]
    seen: list[tuple[str, str, int]] = []
    versions: list[str] = []

    def handler(kind: str, obj: Deployment) -> None:
        if kind != "SYNC":
            versions.append(str(obj["metadata"].get("resourceVersion")))
        replicas = int((obj.get("spec") or {}).get("replicas") or 0)
        seen.append((kind, Informer.key(obj)[1], replicas))

    informer: Informer[Deployment] = Informer(
        "deployments",
        apps.list_namespaced_deployment,
        NS,
        handler=handler,
        watch_timeout_s=1,
    )
    task = asyncio.create_task(informer.run())
    try:
        await wait_until(informer.synced.is_set, what="the first list")
        # Counts the lists (GETs that are not watches) from here on; changes nothing.
        lists = sim.cluster.ctx.faults.add(
            FaultRule(path="/deployments", method="GET", watch=False, times=None)
        )
        for replicas in (1, 2, 3):
            await apps.patch_namespaced_deployment_scale(
                "moving", NS, {"spec": {"replicas": replicas}}
            )
            done = informer.rewatches
            await wait_until(
                lambda done=done: informer.rewatches > done,  # type: ignore[misc]
                what="the watch to end and resume",
            )
        await wait_until(lambda: ("MODIFIED", "moving", 3) in seen, what="the last change")
        changes = [r for k, n, r in seen if k == "MODIFIED"]  # each scale, then status updates
        assert list(dict.fromkeys(changes)) == [1, 2, 3]
        assert len(versions) == len(set(versions)), f"a resumed watch replayed: {versions}"
        assert informer.rewatches >= 3
        assert lists.hits == 0, f"{lists.hits} lists after the first: a watch end re-listed"
        assert informer.errors == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
