"""The typed views of `controller.objects` name fields that exist: every key (nested ones too) is
in the object's published schema (Kubernetes' own, via kubernetes-validate; the shipped Karpenter
and CapacityBuffer CRDs; our InferenceScaler CRD), with a matching JSON type. mypy checks the
code against the views; this checks the views against Kubernetes, so a misspelt field
(`readyReplica`) cannot hide behind `.get(...) or 0`."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, TypedDict, Union, get_args, get_origin, get_type_hints, is_typeddict

import kubernetes_validate.utils
import pytest
import yaml

from controller import crd, objects

ROOT = Path(__file__).resolve().parents[2]
VERSION = "1.32.0"
FOLDER = f"kubernetes-json-schema/v{VERSION}-local-strict"
JSON_TYPES: dict[Any, set[str]] = {
    str: {"string"},
    int: {"integer"},
    float: {"number"},
    bool: {"boolean"},
    object: {"string", "integer", "number", "boolean", "object", "array", "null"},
}


class Schema:
    """A schema with its `$ref`s resolved against kubernetes-validate's definitions."""

    def __init__(self) -> None:
        self.defs = kubernetes_validate.utils.schema_contents(
            f"{FOLDER}/_definitions.json", VERSION
        )

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.defs["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        for key in ("allOf", "anyOf", "oneOf"):
            if key in node and "properties" not in node:
                options = [self.resolve(o) for o in node[key] if o.get("type") != "null"]
                if len(options) == 1:
                    return options[0]
        return node


def _types(node: dict[str, Any]) -> set[str]:
    kind = node.get("type", [])
    found = {kind} if isinstance(kind, str) else set(kind)
    if node.get("x-kubernetes-int-or-string"):
        found |= {"integer", "string"}
    return found - {"null"}


def problems(view: Any, node: dict[str, Any], schema: Schema, path: str) -> list[str]:
    """Keys of the TypedDict `view` not in the schema `node`, or with another type."""
    node = schema.resolve(node)
    props = node.get("properties") or {}
    out = []
    for key, hint in get_type_hints(view).items():
        where = f"{path}.{key}"
        if key not in props:
            out.append(f"{where}: not in the schema")
            continue
        out += _check(hint, schema.resolve(props[key]), schema, where)
    return out


def _check(hint: Any, node: dict[str, Any], schema: Schema, where: str) -> list[str]:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return [p for arg in get_args(hint) for p in _check(arg, node, schema, where)]
    if is_typeddict(hint):
        return problems(hint, node, schema, where)
    if origin is list:
        if "array" not in _types(node):
            return [f"{where}: a list here, {_types(node)} there"]
        return _check(get_args(hint)[0], schema.resolve(node.get("items") or {}), schema, where)
    if origin is dict:
        return [] if "object" in _types(node) else [f"{where}: a map here, {_types(node)} there"]
    if not JSON_TYPES[hint] & _types(node):
        return [f"{where}: {hint.__name__} here, {_types(node)} there"]
    return []


def _builtin(kind: str, group_version: str) -> dict[str, Any]:
    schema: dict[str, Any] = kubernetes_validate.utils.schema_contents(
        f"{FOLDER}/{kind}-{group_version}.json", VERSION
    )
    return schema


def _crd(path: Path, version: str) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (served,) = [v for v in doc["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    # a CRD's metadata is the standard ObjectMeta (its schema only says "object")
    schema["properties"]["metadata"] = {
        "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    return schema


CRDS = ROOT / "sim" / "data"


@pytest.mark.parametrize(
    ("view", "source"),
    [
        pytest.param(
            objects.Deployment, lambda: _builtin("deployment", "apps-v1"), id="Deployment"
        ),
        pytest.param(objects.Node, lambda: _builtin("node", "v1"), id="Node"),
        pytest.param(objects.Pod, lambda: _builtin("pod", "v1"), id="Pod"),
        pytest.param(objects.Lease, lambda: _builtin("lease", "coordination-v1"), id="Lease"),
        pytest.param(
            objects.NodePool,
            lambda: _crd(CRDS / "karpenter-crds" / "karpenter.sh_nodepools.yaml", "v1"),
            id="NodePool",
        ),
        pytest.param(
            objects.CapacityBuffer,
            lambda: _crd(
                CRDS / "karpenter-aws-crds" / "autoscaling.x-k8s.io_capacitybuffers.yaml",
                "v1beta1",
            ),
            id="CapacityBuffer",
        ),
        pytest.param(
            objects.InferenceScalerObject,
            lambda: _crd(ROOT / crd.CRD_PATH, crd.VERSION),
            id="InferenceScaler",
        ),
        pytest.param(
            objects.ScalerStatus,
            lambda: _crd(ROOT / crd.CRD_PATH, crd.VERSION)["properties"]["status"],
            id="InferenceScaler.status",
        ),
    ],
)
def test_every_field_of_a_view_is_in_the_schema(view: Any, source: Any) -> None:
    assert problems(view, source(), Schema(), view.__name__) == []


class _Status(TypedDict, total=False):
    readyReplica: int
    replicas: str


class _Wrong(objects.KubeObject, total=False):
    status: _Status


def test_a_misspelt_field_is_caught() -> None:
    """The check itself can fail: a view with a wrong name or type is reported."""
    found = problems(_Wrong, _builtin("deployment", "apps-v1"), Schema(), "Wrong")
    assert found == [
        "Wrong.status.readyReplica: not in the schema",
        "Wrong.status.replicas: str here, {'integer'} there",
    ]
