"""Bad input never corrupts the store: random bodies and patches get 4xx Statuses (never 5xx),
and whatever was stored before is still there and still well-formed afterwards."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.cluster import RunningCluster

from .conftest import eventually

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "spec",
                    "metadata",
                    "replicas",
                    "name",
                    "op",
                    "path",
                    "value",
                    "status",
                    "kind",
                    "selector",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
PATCH_TYPES = [
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
]


async def _status_of(
    http: aiohttp.ClientSession, method: str, url: str, body: bytes, ctype: str
) -> tuple[int, Any]:
    async with http.request(method, url, data=body, headers={"Content-Type": ctype}) as r:
        return r.status, await r.json(content_type=None)


async def test_random_bodies_and_patches_are_refused_cleanly(cluster: RunningCluster) -> None:
    base = f"{cluster.url}/apis/apps/v1/namespaces/default/deployments"
    pool = f"{cluster.url}/apis/karpenter.sh/v1/nodepools/gpu"
    pods = f"{cluster.url}/api/v1/namespaces/default/pods"
    good = {
        "metadata": {"name": "keep"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "keep"}},
            "template": {
                "metadata": {"labels": {"app": "keep"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }
    async with aiohttp.ClientSession() as http:
        code, _ = await _status_of(http, "POST", base, orjson.dumps(good), "application/json")
        assert code == 201
        seen: list[int] = []

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(body=JSON, ctype=st.sampled_from(PATCH_TYPES), raw=st.binary(max_size=8))
        def probe(body: Any, ctype: str, raw: bytes) -> None:
            seen.append(0)
            probes.append((body, ctype, raw))

        probes: list[tuple[Any, str, bytes]] = []
        probe()
        for body, ctype, raw in probes:
            for method, url, data, kind in (
                ("POST", base, orjson.dumps(body), "application/json"),
                ("PATCH", f"{base}/keep", orjson.dumps(body), ctype),
                ("PATCH", f"{base}/keep", raw, ctype),
                ("PUT", f"{base}/keep", orjson.dumps(body), "application/json"),
                ("PATCH", f"{base}/keep/scale", orjson.dumps(body), ctype),
                ("PATCH", pool, orjson.dumps(body), ctype),
                ("PATCH", f"{pool}/scale", orjson.dumps(body), ctype),
                ("POST", pods, orjson.dumps(body), "application/json"),
            ):
                code, answer = await _status_of(http, method, url, data, kind)
                assert code < 500, (method, body, answer)
                if code >= 400:
                    assert answer["kind"] == "Status"
                    assert answer["code"] == code
        async with http.get(base) as r:
            items = (await r.json())["items"]
        async with http.get(pool) as r:
            assert r.status == 200
            nodepool = await r.json()
    assert seen, "hypothesis generated inputs"
    assert isinstance(nodepool["spec"]["replicas"], int)
    assert nodepool["spec"]["template"]["spec"]["nodeClassRef"]["name"]
    for item in items:
        assert item["kind"] == "Deployment"
        assert isinstance(item["spec"]["replicas"], int)
        assert item["spec"]["replicas"] >= 0
        assert item["spec"]["selector"]["matchLabels"]
        assert item["metadata"]["resourceVersion"]


async def test_deleting_a_namespace_deletes_its_objects(cluster: RunningCluster) -> None:
    async with aiohttp.ClientSession() as http:
        ns_url = f"{cluster.url}/api/v1/namespaces"
        async with http.post(ns_url, json={"metadata": {"name": "tmp"}}) as r:
            assert r.status == 201
        cm_url = f"{cluster.url}/api/v1/namespaces/tmp/configmaps"
        async with http.post(cm_url, json={"metadata": {"name": "a"}}) as r:
            assert r.status == 201
        async with http.delete(f"{ns_url}/tmp") as r:
            assert r.status == 200
        async with http.delete(f"{ns_url}/default") as r:
            assert r.status == 403, "the default namespace may not be deleted"
    cms = cluster.resource("", "v1", "configmaps")
    await eventually(lambda: not cluster.store.select(cms, "tmp")[0], what="contents deleted")
