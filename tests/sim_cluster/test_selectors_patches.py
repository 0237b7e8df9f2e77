"""Label/field selectors and the three patch flavours, table-driven."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sim.cluster import patches
from sim.cluster.errors import ApiError
from sim.cluster.selectors import FieldSelector, LabelSelector
from sim.cluster.tables import human_duration, jsonpath


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        pytest.param("app=a", {"app": "a"}, True, id="eq"),
        pytest.param("app==a", {"app": "b"}, False, id="eq-miss"),
        pytest.param("app!=a", {}, True, id="neq-absent"),
        pytest.param("app in (a,b),tier", {"app": "b", "tier": "x"}, True, id="in-and-exists"),
        pytest.param("app notin (a,b)", {"app": "a"}, False, id="notin"),
        pytest.param("!canary", {"canary": "1"}, False, id="not-exists"),
        pytest.param("", {"x": "y"}, True, id="empty"),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.parse(selector).matches(labels) is expected


def test_label_selector_garbage_is_400() -> None:
    with pytest.raises(ApiError) as exc:
        LabelSelector.parse("a in (b")
    assert exc.value.code == 400


def test_field_selector() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    assert FieldSelector.parse("spec.nodeName=n1,status.phase!=Pending").matches(pod)
    assert not FieldSelector.parse("metadata.name=q").matches(pod)


BASE: dict[str, Any] = {
    "metadata": {"name": "d", "labels": {"a": "1", "b": "2"}},
    "spec": {
        "replicas": 1,
        "template": {
            "spec": {"containers": [{"name": "c1", "image": "i1"}, {"name": "c2", "image": "i2"}]}
        },
    },
}


@pytest.mark.parametrize(
    ("ctype", "patch", "check"),
    [
        pytest.param(
            patches.MERGE,
            {"spec": {"replicas": 3}, "metadata": {"labels": {"a": None}}},
            lambda o: o["spec"]["replicas"] == 3 and "a" not in o["metadata"]["labels"],
            id="merge",
        ),
        pytest.param(
            patches.MERGE,
            {"spec": {"template": {"spec": {"containers": [{"name": "c1", "image": "new"}]}}}},
            lambda o: len(o["spec"]["template"]["spec"]["containers"]) == 1,
            id="merge-replaces-lists",
        ),
        pytest.param(
            patches.STRATEGIC,
            {"spec": {"template": {"spec": {"containers": [{"name": "c1", "image": "new"}]}}}},
            lambda o: (
                [c["image"] for c in o["spec"]["template"]["spec"]["containers"]] == ["new", "i2"]
            ),
            id="strategic-merges-by-name",
        ),
        pytest.param(
            patches.STRATEGIC,
            {"spec": {"template": {"spec": {"containers": [{"name": "c2", "$patch": "delete"}]}}}},
            lambda o: [c["name"] for c in o["spec"]["template"]["spec"]["containers"]] == ["c1"],
            id="strategic-delete",
        ),
        pytest.param(
            patches.JSON,
            [
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "add", "path": "/metadata/labels/c", "value": "3"},
            ],
            lambda o: o["spec"]["replicas"] == 5 and o["metadata"]["labels"]["c"] == "3",
            id="json-patch",
        ),
    ],
)
def test_patches(ctype: str, patch: Any, check: Any) -> None:
    result = patches.apply_patch(BASE, orjson.dumps(patch), ctype)
    assert check(result)
    assert BASE["spec"]["replicas"] == 1  # the input is never mutated


@pytest.mark.parametrize(
    ("ctype", "body", "code"),
    [
        pytest.param(patches.MERGE, b"{not json", 400, id="bad-json"),
        pytest.param(patches.JSON, b'{"op": "add"}', 400, id="json-patch-not-a-list"),
        pytest.param(
            patches.JSON,
            b'[{"op": "test", "path": "/spec/replicas", "value": 9}]',
            422,
            id="json-patch-test-fails",
        ),
        pytest.param(patches.JSON, b'[{"op": "remove", "path": "/nope"}]', 422, id="bad-path"),
        pytest.param("text/plain", b"{}", 415, id="unknown-type"),
    ],
)
def test_bad_patches(ctype: str, body: bytes, code: int) -> None:
    with pytest.raises(ApiError) as exc:
        patches.apply_patch(BASE, body, ctype)
    assert exc.value.code == code


def test_jsonpath_and_durations() -> None:
    obj = {
        "status": {
            "conditions": [{"type": "A", "status": "x"}, {"type": "Ready", "status": "True"}]
        },
        "metadata": {"labels": {"k.io/z": "v"}},
    }
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert jsonpath(obj, r".metadata.labels.k\.io/z") == ["v"]
    assert jsonpath(obj, ".status.conditions[*].type") == ["A", "Ready"]
    assert [human_duration(s) for s in (5, 125, 3600 * 5 + 120, 86400 * 3)] == [
        "5s",
        "2m5s",
        "5h2m",
        "3d",
    ]
