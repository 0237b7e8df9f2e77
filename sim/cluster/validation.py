"""Schema validation and defaulting of custom objects against a CRD's openAPIV3Schema.

Karpenter's NodePool/NodeClaim and our InferenceScaler are checked on every create and update.
The OpenAPI v3 schema dialect is turned into JSON Schema for `jsonschema` (`nullable`,
`x-kubernetes-int-or-string`), `default`s are filled in as the real server's structural
defaulting does, and each violation is reported with its field path for a 422 Status.
CEL rules (`x-kubernetes-validations`) are not evaluated.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

Obj = dict[str, Any]


def _convert(schema: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) -> JSON Schema draft 7, recursively."""
    if isinstance(schema, list):
        return [_convert(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("x-kubernetes-validations", "description", "example"):
            continue
        if key == "pattern" and isinstance(value, str):
            try:
                re.compile(value)
            except re.error:
                continue  # an RE2-only pattern: leave it to the real server
            out[key] = value
        elif key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _convert(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = _convert(value)
        else:
            out[key] = value
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = out.get(bound)
        if isinstance(flag, bool):
            if flag and limit in out:
                out[bound] = out.pop(limit)
            else:
                out.pop(bound)
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def apply_defaults(schema: Any, obj: Any) -> None:
    """Fill in `default` values for absent properties, recursing into present ones."""
    if not isinstance(schema, dict):
        return
    if isinstance(obj, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in obj and isinstance(sub, dict) and "default" in sub:
                obj[name] = _copy(sub["default"])
            if name in obj:
                apply_defaults(sub, obj[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, value in obj.items():
                if name not in (schema.get("properties") or {}):
                    apply_defaults(extra, value)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(schema["items"], item)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _prune(schema: Any, value: Any, path: str, dropped: list[str]) -> None:
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in list(value):
            if path == "" and key in ("apiVersion", "kind", "metadata"):
                continue
            sub_path = f"{path}.{key}" if path else key
            if isinstance(props, dict) and key in props:
                _prune(props[key], value[key], sub_path, dropped)
            elif isinstance(extra, dict):
                _prune(extra, value[key], sub_path, dropped)
            elif extra is True or (props is None and extra is None):
                continue  # a free-form object
            else:
                dropped.append(sub_path)
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            _prune(schema["items"], item, f"{path}[{n}]", dropped)


class SchemaValidator:
    """Validates (and defaults) objects against one CRD version's openAPIV3Schema."""

    def __init__(self, schema: Obj) -> None:
        self.schema = schema
        converted = _convert(schema)
        props = converted.get("properties")
        if isinstance(props, dict) and "metadata" in props:
            props["metadata"] = {"type": "object"}
        self._validator = jsonschema.Draft7Validator(converted)

    def default(self, obj: Obj) -> None:
        apply_defaults(self.schema, obj)

    def prune(self, obj: Obj) -> list[str]:
        """Drop fields the schema does not declare (structural pruning); returns their paths."""
        dropped: list[str] = []
        _prune(self.schema, obj, "", dropped)
        return dropped

    def __call__(self, obj: Obj) -> list[tuple[str, str]]:
        out = []
        for err in sorted(self._validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in err.absolute_path) or "<root>"
            out.append((path, err.message))
        return out
