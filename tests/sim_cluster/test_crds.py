"""CustomResourceDefinitions: install through apiextensions, serve, validate, status, scale, delete."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from controller.crd import crd_manifest
from sim.cluster import RunningCluster

from .conftest import eventually

# kubernetes_asyncio sends dict bodies of custom-object patches as json-patch unless told
MERGE_KW: dict[str, Any] = {"_content_type": "application/merge-patch+json"}

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1},
                                    "replicas": {"type": "integer", "default": 1},
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"ready": {"type": "integer"}},
                            },
                        },
                    }
                },
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.ready",
                    },
                },
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Ready", "type": "integer", "jsonPath": ".status.ready"},
                ],
            }
        ],
    },
}


async def test_generic_crd_lifecycle(cluster: RunningCluster, api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    crd = await ext.create_custom_resource_definition(_any(WIDGET_CRD))
    assert crd.metadata.name == "widgets.example.com"
    got = await ext.read_custom_resource_definition("widgets.example.com")
    assert {c.type for c in got.status.conditions} >= {"Established", "NamesAccepted"}
    co = client.CustomObjectsApi(api)
    obj = await co.create_namespaced_custom_object(
        "example.com",
        "v1",
        "default",
        "widgets",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 3},
            "status": {"ready": 99},
        },
    )
    assert obj["spec"]["replicas"] == 1, "schema default applied"
    assert "ready" not in (obj.get("status") or {}), "status is ignored on the main resource"
    for bad in ({"size": 0}, {"color": "green", "size": 1}, {}):
        with pytest.raises(ApiException) as exc:
            await co.create_namespaced_custom_object(
                "example.com",
                "v1",
                "default",
                "widgets",
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": "bad"},
                    "spec": bad,
                },
            )
        assert exc.value.status == 422
    await co.patch_namespaced_custom_object_status(
        "example.com",
        "v1",
        "default",
        "widgets",
        "w",
        {"status": {"ready": 2}},
        **MERGE_KW,
    )
    after = await co.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "w")
    assert after["status"] == {"ready": 2}
    assert after["metadata"]["generation"] == 1
    await co.patch_namespaced_custom_object_scale(
        "example.com",
        "v1",
        "default",
        "widgets",
        "w",
        {"spec": {"replicas": 5}},
        **MERGE_KW,
    )
    scale = await co.get_namespaced_custom_object_scale(
        "example.com", "v1", "default", "widgets", "w"
    )
    assert scale["spec"]["replicas"] == 5
    assert scale["status"]["replicas"] == 2
    async with aiohttp.ClientSession() as http:
        url = f"{cluster.url}/apis/example.com/v1/namespaces/default/widgets"
        accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        async with http.get(url, headers={"Accept": accept}) as r:
            table = await r.json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Ready"]
    assert table["rows"][0]["cells"] == ["w", 3, 2]
    await ext.delete_custom_resource_definition("widgets.example.com")
    with pytest.raises(ApiException) as exc:
        await co.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert exc.value.status == 404


async def test_our_inferencescaler_crd(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    await ext.create_custom_resource_definition(_any(crd_manifest()))
    co = client.CustomObjectsApi(api)
    body = {
        "apiVersion": "surgescale.io/v1alpha1",
        "kind": "InferenceScaler",
        "metadata": {"name": "m"},
        "spec": {
            "model": "llama3-8b",
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "m"},
        },
    }
    created = await co.create_namespaced_custom_object(
        "surgescale.io", "v1alpha1", "default", "inferencescalers", body
    )
    assert created["spec"]["model"] == "llama3-8b"
    await co.patch_namespaced_custom_object_status(
        "surgescale.io",
        "v1alpha1",
        "default",
        "inferencescalers",
        "m",
        {"status": {"observedGeneration": 1}},
        **MERGE_KW,
    )
    got = await co.get_namespaced_custom_object(
        "surgescale.io", "v1alpha1", "default", "inferencescalers", "m"
    )
    assert got["status"]["observedGeneration"] == 1


async def test_karpenter_objects_validated_against_real_crds(api: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    bad = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "bad"},
        "spec": {"template": {"spec": {"requirements": []}}},
    }  # no nodeClassRef
    with pytest.raises(ApiException) as exc:
        await co.create_cluster_custom_object("karpenter.sh", "v1", "nodepools", bad)
    assert exc.value.status == 422
    assert "nodeClassRef" in str(exc.value.body)
    pool = await co.get_cluster_custom_object("karpenter.sh", "v1", "nodepools", "gpu")
    assert pool["spec"]["replicas"] == 1
    with pytest.raises(ApiException) as exc:
        await co.patch_cluster_custom_object(
            "karpenter.sh",
            "v1",
            "nodepools",
            "gpu",
            {"spec": {"weight": 1000}},
            **MERGE_KW,
        )
    assert exc.value.status == 422, "weight above the CRD's maximum of 100"

    async def claims() -> bool:
        items = await co.list_cluster_custom_object("karpenter.sh", "v1", "nodeclaims")
        return len(items["items"]) == 1

    await eventually(claims, what="static pool's one nodeclaim")


def _any(x: Any) -> Any:
    """kubernetes_asyncio accepts plain dicts for its model parameters."""
    return x


async def test_unknown_fields_are_pruned_or_refused_when_strict(
    cluster: RunningCluster, api: client.ApiClient
) -> None:
    await client.ApiextensionsV1Api(api).create_custom_resource_definition(_any(WIDGET_CRD))
    url = f"{cluster.url}/apis/example.com/v1/namespaces/default/widgets"
    body = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 2, "sise": 3},
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url, params={"fieldValidation": "Strict"}, json=body) as r:
            answer = await r.json()
            assert r.status == 400
            assert 'unknown field "spec.sise"' in answer["message"]
        async with http.post(url, json=body) as r:
            assert r.status == 201
            assert (await r.json())["spec"] == {"size": 2, "replicas": 1}
