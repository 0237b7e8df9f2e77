"""The API over real HTTP with kubernetes_asyncio: discovery, verbs, errors, watch, subresources."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from sim.cluster import RunningCluster


def deployment(name: str, replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
            **extra,
        },
    }


async def test_discovery_lists_groups_and_subresources(cluster: RunningCluster) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{cluster.url}/apis") as r:
            groups = {g["name"] for g in (await r.json())["groups"]}
        assert {
            "apps",
            "discovery.k8s.io",
            "coordination.k8s.io",
            "karpenter.sh",
            "apiextensions.k8s.io",
        } <= groups
        async with http.get(f"{cluster.url}/apis/karpenter.sh/v1") as r:
            names = {x["name"]: x for x in (await r.json())["resources"]}
        assert names["nodepools/scale"]["kind"] == "Scale"
        assert names["nodepools/scale"]["group"] == "autoscaling"
        async with http.get(f"{cluster.url}/api/v1") as r:
            core = {x["name"] for x in (await r.json())["resources"]}
        assert {"pods", "pods/status", "nodes", "namespaces", "services", "events"} <= core
        async with http.get(f"{cluster.url}/version") as r:
            assert (await r.json())["major"] == "1"


async def test_crud_conflict_and_errors(api: client.ApiClient) -> None:
    apps: Any = client.AppsV1Api(api)
    core: Any = client.CoreV1Api(api)
    created = await apps.create_namespaced_deployment("default", deployment("web"))
    assert created.metadata.generation == 1
    with pytest.raises(ApiException) as exc:
        await apps.create_namespaced_deployment("default", deployment("web"))
    assert exc.value.status == 409
    stale_rv = created.metadata.resource_version
    await apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    body = deployment("web", 3)
    body["metadata"]["resourceVersion"] = stale_rv
    with pytest.raises(ApiException) as exc:
        await apps.replace_namespaced_deployment("web", "default", body)
    assert exc.value.status == 409
    current = await apps.read_namespaced_deployment("web", "default")
    assert current.spec.replicas == 2
    assert current.metadata.generation == 2
    with pytest.raises(ApiException) as exc:
        await apps.read_namespaced_deployment("nope", "default")
    assert exc.value.status == 404
    bad = deployment("bad")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(ApiException) as exc:
        await apps.create_namespaced_deployment("default", bad)
    assert exc.value.status == 422
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map("missing-ns", {"metadata": {"name": "x"}})
    assert exc.value.status == 404
    await apps.delete_namespaced_deployment("web", "default")
    with pytest.raises(ApiException) as exc:
        await apps.read_namespaced_deployment("web", "default")
    assert exc.value.status == 404


async def test_raw_bad_input_is_status(cluster: RunningCluster) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{cluster.url}/apis/apps/v1/namespaces/default/deployments"
        async with http.post(url, data=b"{nope", headers={"Content-Type": "application/json"}) as r:
            body = await r.json()
            assert r.status == 400
            assert body["kind"] == "Status"
            assert body["code"] == 400
        async with http.get(f"{cluster.url}/apis/apps/v1/namespaces/default/widgets") as r:
            assert r.status == 404
            assert (await r.json())["kind"] == "Status"
        async with http.patch(
            f"{url}/none", data=b"{}", headers={"Content-Type": "application/merge-patch+json"}
        ) as r:
            assert r.status == 404
    assert cluster.store.count(cluster.resource("apps", "v1", "deployments")) == 0


async def test_scale_subresource_get_patch_put(api: client.ApiClient) -> None:
    apps: Any = client.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", deployment("s", 1))
    scale = await apps.read_namespaced_deployment_scale("s", "default")
    assert scale.spec.replicas == 1
    assert scale.status.selector == "app=s"
    await apps.patch_namespaced_deployment_scale("s", "default", {"spec": {"replicas": 4}})
    assert (await apps.read_namespaced_deployment("s", "default")).spec.replicas == 4
    stale = await apps.read_namespaced_deployment_scale("s", "default")
    for _ in range(10):  # the controllers write status meanwhile: retry on conflict, as clients do
        scale = await apps.read_namespaced_deployment_scale("s", "default")
        scale.spec.replicas = 2
        try:
            await apps.replace_namespaced_deployment_scale("s", "default", scale)
            break
        except ApiException as conflict:
            if conflict.status != 409:
                raise
    assert (await apps.read_namespaced_deployment("s", "default")).spec.replicas == 2
    stale.spec.replicas = 7
    with pytest.raises(ApiException) as exc:  # its resourceVersion is older than the last write
        await apps.replace_namespaced_deployment_scale("s", "default", stale)
    assert exc.value.status == 409
    with pytest.raises(ApiException) as exc:
        await apps.patch_namespaced_deployment_scale("s", "default", {"spec": {"replicas": -1}})
    assert exc.value.status == 422


async def test_list_selectors_and_watch(api: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(api)
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "labels": {"tier": tier}}}
        )
    listed = await core.list_namespaced_config_map("default", label_selector="tier=web")
    assert [i.metadata.name for i in listed.items] == ["a", "c"]
    by_name = await core.list_namespaced_config_map("default", field_selector="metadata.name=b")
    assert [i.metadata.name for i in by_name.items] == ["b"]
    rv = listed.metadata.resource_version

    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        w = watch.Watch()
        async with w.stream(
            core.list_namespaced_config_map,
            "default",
            label_selector="tier=web",
            resource_version=rv,
            timeout_seconds=10,
        ) as stream:
            async for event in stream:
                seen.append((event["type"], event["object"].metadata.name))
                if len(seen) == 3:
                    w.stop()

    # No wait for the watch to connect: from `rv` it gets the changes made before it did, too.
    task = asyncio.create_task(consume())
    await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "d", "labels": {"tier": "web"}}}
    )
    await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "e", "labels": {"tier": "db"}}}
    )
    await core.patch_namespaced_config_map("a", "default", {"data": {"x": "1"}})
    await core.delete_namespaced_config_map("c", "default")
    await asyncio.wait_for(task, 10)
    assert seen == [("ADDED", "d"), ("MODIFIED", "a"), ("DELETED", "c")]


async def test_watch_too_old_resource_version_is_gone(
    cluster: RunningCluster, api: client.ApiClient
) -> None:
    core: Any = client.CoreV1Api(api)
    await core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    cluster.store.compact()  # as etcd compaction does: history before now is gone

    async def drain() -> None:
        w = watch.Watch()
        async with w.stream(
            core.list_namespaced_config_map, "default", resource_version="2", timeout_seconds=5
        ) as stream:
            async for _ in stream:
                pass

    with pytest.raises(ApiException) as exc:
        await drain()
    assert exc.value.status == 410


async def test_leases_for_leader_election(api: client.ApiClient) -> None:
    coord: Any = client.CoordinationV1Api(api)
    lease = await coord.create_namespaced_lease(
        "default",
        {
            "metadata": {"name": "surgescale-controller"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        },
    )
    lease.spec.holder_identity = "b"
    await coord.replace_namespaced_lease("surgescale-controller", "default", lease)
    lease.spec.holder_identity = "c"  # second writer with the old resourceVersion loses
    with pytest.raises(ApiException) as exc:
        await coord.replace_namespaced_lease("surgescale-controller", "default", lease)
    assert exc.value.status == 409
    got = await coord.read_namespaced_lease("surgescale-controller", "default")
    assert got.spec.holder_identity == "b"


async def test_events_and_dry_run(api: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(api)
    await core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Deployment", "name": "x"},
            "reason": "Scaled",
            "message": "to 3",
            "type": "Normal",
        },
    )
    mine = await core.list_namespaced_event("default", field_selector="involvedObject.name=x")
    assert [e.reason for e in mine.items] == ["Scaled"]
    await core.create_namespaced_config_map("default", {"metadata": {"name": "dry"}}, dry_run="All")
    assert not (await core.list_namespaced_config_map("default")).items


async def test_lifecycle_events_are_recorded(api: client.ApiClient) -> None:
    apps: Any = client.AppsV1Api(api)
    core: Any = client.CoreV1Api(api)
    await apps.create_namespaced_deployment("default", deployment("ev", 1))

    async def reasons() -> set[str]:
        items = (await core.list_namespaced_event("default")).items
        return {e.reason for e in items}

    for _ in range(200):
        if {"ScalingReplicaSet", "SuccessfulCreate", "Scheduled"} <= await reasons():
            break
        await asyncio.sleep(0.05)
    assert {"ScalingReplicaSet", "SuccessfulCreate", "Scheduled"} <= await reasons()


async def test_server_side_apply_creates_then_patches(cluster: RunningCluster) -> None:
    url = f"{cluster.url}/api/v1/namespaces/default/configmaps/ssa?fieldManager=me"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    async with aiohttp.ClientSession() as http:
        body = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1'}\n"
        async with http.patch(url, data=body, headers=headers) as r:
            assert r.status == 201
        async with http.patch(url, data=body.replace("'1'", "'2'"), headers=headers) as r:
            assert r.status == 200
            assert (await r.json())["data"] == {"a": "2"}


async def test_idle_watch_gets_bookmarks(cluster: RunningCluster) -> None:
    cluster.ctx.bookmark_interval_s = 0.1
    url = f"{cluster.url}/api/v1/namespaces/default/configmaps"
    params = {
        "watch": "1",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "3",
        "resourceVersion": str(cluster.store.rv),
    }
    types: list[str] = []
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as resp:
        async for line in resp.content:
            event = json.loads(line)
            types.append(event["type"])
            if event["type"] == "BOOKMARK":
                assert int(event["object"]["metadata"]["resourceVersion"]) >= 1
                if types.count("BOOKMARK") == 2:
                    async with http.post(url, json={"metadata": {"name": "after"}}) as r:
                        assert r.status == 201
            if event["type"] == "ADDED":
                break
    assert types[:2] == ["BOOKMARK", "BOOKMARK"]
    assert types[-1] == "ADDED"
