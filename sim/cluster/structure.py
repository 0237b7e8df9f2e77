"""Structural validation of the built-in kinds whose fields the simulated controllers read.

A small JSON Schema per kind (ObjectMeta, Deployment/ReplicaSet/Pod specs, Service, Lease,
PriorityClass, ConfigMap, EndpointSlice) checked on every client write before defaulting, so
a wrong type anywhere (`replicas: true`, labels that are not strings, containers that are not
objects) is a 422 naming the field instead of an exception deep in a controller. These are not
the full upstream schemas: only the fields we interpret are typed; others pass through.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema

StrMap: dict[str, Any] = {"type": ["object", "null"], "additionalProperties": {"type": "string"}}
Int0: dict[str, Any] = {"type": "integer", "minimum": 0}
Objects: dict[str, Any] = {"type": ["array", "null"], "items": {"type": "object"}}

META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {
            "type": "string",
            "maxLength": 253,
            "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        },
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": StrMap,
        "annotations": StrMap,
        "ownerReferences": Objects,
        "finalizers": {"type": ["array", "null"], "items": {"type": "string"}},
        "resourceVersion": {"type": "string"},
    },
}
CONTAINER: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string"},
        "env": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "ports": {
            "type": ["array", "null"],
            "items": {"type": "object", "properties": {"containerPort": {"type": "integer"}}},
        },
        "resources": {
            "type": ["object", "null"],
            "properties": {
                "limits": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": ["string", "number"]},
                },
                "requests": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": ["string", "number"]},
                },
            },
        },
    },
}
POD_SPEC: dict[str, Any] = {
    "type": "object",
    "properties": {
        "containers": {"type": "array", "items": CONTAINER},
        "nodeSelector": StrMap,
        "tolerations": Objects,
        "priorityClassName": {"type": "string"},
        "priority": {"type": "integer"},
        "terminationGracePeriodSeconds": Int0,
        "nodeName": {"type": "string"},
    },
}
SELECTOR: dict[str, Any] = {
    "type": "object",
    "properties": {"matchLabels": StrMap, "matchExpressions": Objects},
}
WORKLOAD_SPEC: dict[str, Any] = {
    "type": "object",
    "properties": {
        "replicas": Int0,
        "selector": SELECTOR,
        "template": {
            "type": "object",
            "properties": {
                "metadata": {
                    "type": "object",
                    "properties": {"labels": StrMap, "annotations": StrMap},
                },
                "spec": POD_SPEC,
            },
        },
    },
}
SPECS: dict[str, dict[str, Any]] = {
    "Deployment": {"spec": WORKLOAD_SPEC},
    "ReplicaSet": {"spec": WORKLOAD_SPEC},
    "Pod": {"spec": POD_SPEC},
    "Service": {
        "spec": {
            "type": "object",
            "properties": {
                "selector": StrMap,
                "ports": {
                    "type": ["array", "null"],
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "integer"},
                            "name": {"type": "string"},
                            "targetPort": {"type": ["integer", "string"]},
                        },
                    },
                },
            },
        }
    },
    "Lease": {
        "spec": {
            "type": "object",
            "properties": {
                "holderIdentity": {"type": ["string", "null"]},
                "leaseDurationSeconds": {"type": ["integer", "null"]},
                "leaseTransitions": {"type": ["integer", "null"]},
            },
        }
    },
    "PriorityClass": {"value": {"type": "integer"}, "globalDefault": {"type": "boolean"}},
    "ConfigMap": {"data": StrMap},
    "EndpointSlice": {
        "endpoints": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "properties": {"addresses": {"type": "array", "items": {"type": "string"}}},
            },
        },
        "ports": Objects,
    },
}


CUSTOM = "*custom*"
"""Kind placeholder for custom resources: their own schema types spec and status."""


@cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    properties: dict[str, Any] = {"metadata": META}
    if kind != CUSTOM:
        properties["spec"] = {"type": "object"}
        properties["status"] = {"type": ["object", "null"]}
        properties.update(SPECS.get(kind, {}))
    return jsonschema.Draft7Validator({"type": "object", "properties": properties})


def check(kind: str, obj: Any) -> list[tuple[str, str]]:
    """(field path, message) for each structural error; empty when the object is well-formed."""
    out = []
    for err in _validator(kind).iter_errors(obj):
        path = ".".join(str(p) for p in err.absolute_path) or "<root>"
        out.append((path, err.message))
    return sorted(out)
