"""OpenAPI documents, enough for `kubectl apply` (1.32 reads v3, 1.20 reads v2 as protobuf).

v3: the root lists one document per served group/version; each document has, per resource, the
item path with a PATCH operation tagged `x-kubernetes-group-version-kind` whose parameters
include `fieldValidation`, so kubectl leaves validation to the server (which validates custom
and Karpenter objects against their schemas), and component schemas (a CRD's own schema).
v2: a JSON swagger document, or (for `Accept: application/com.github.proto-openapi...`) the same
minimal document encoded as the gnostic OpenAPIv2 protobuf message kubectl 1.20 decodes; it
declares no definitions, so such clients skip client-side validation, as they do for unknown kinds.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .protobuf import length_delimited
from .resources import Registry, ResourceType

_PARAMS = ["dryRun", "fieldManager", "fieldValidation", "force", "pretty"]


def _gvk(rt: ResourceType) -> list[dict[str, str]]:
    return [{"group": rt.group, "version": rt.version, "kind": rt.kind}]


def _schema_name(rt: ResourceType) -> str:
    group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{group}.{rt.version}.{rt.kind}"


def _item_path(rt: ResourceType) -> str:
    base = f"/apis/{rt.group}/{rt.version}" if rt.group else "/api/v1"
    ns = "/namespaces/{namespace}" if rt.namespaced else ""
    return f"{base}{ns}/{rt.plural}/{{name}}"


def _op(rt: ResourceType, action: str, content: list[str] | None = None) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{_schema_name(rt)}"}
    op: dict[str, Any] = {
        "operationId": f"{action}{rt.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rt)[0],
        "parameters": [
            {"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for p in _PARAMS
        ],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
        },
    }
    if content:
        op["requestBody"] = {
            "content": {c: {"schema": {"type": "object"}} for c in content},
            "required": True,
        }
    return op


def gv_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in types:
        paths[_item_path(rt)] = {
            "get": _op(rt, "get"),
            "put": _op(rt, "put", ["application/json"]),
            "patch": _op(
                rt,
                "patch",
                [
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/apply-patch+yaml",
                ],
            ),
            "delete": _op(rt, "delete"),
        }
        schema: dict[str, Any] = {"type": "object", "x-kubernetes-group-version-kind": _gvk(rt)}
        crd_schema = getattr(rt.validator, "schema", None)
        if isinstance(crd_schema, dict):
            schema = {**crd_schema, "x-kubernetes-group-version-kind": _gvk(rt)}
        schemas[_schema_name(rt)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _doc_hash(registry: Registry, group: str, version: str) -> str:
    doc = gv_document(registry, group, version)
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32].upper()


def v3_root(registry: Registry) -> dict[str, Any]:
    paths = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            rel = f"apis/{group}/{version}" if group else "api/v1"
            paths[rel] = {
                "serverRelativeURL": f"/openapi/v3/{rel}?hash={_doc_hash(registry, group, version)}"
            }
    return {"paths": paths}


def v2_json(registry: Registry) -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": {},
        "definitions": {},
    }


def v2_protobuf() -> bytes:
    """gnostic openapi_v2.Document{swagger: "2.0", info: {title, version}} as protobuf."""
    info = length_delimited(1, b"Kubernetes") + length_delimited(2, b"v1.32.0")
    return length_delimited(1, b"2.0") + length_delimited(2, info)
