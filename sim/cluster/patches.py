"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

JSON patch is applied by the `jsonpatch` library. Strategic merge is the subset kubectl sends for
the objects we serve: maps merge recursively, `null` deletes, lists of objects that carry a merge
key (`name` for containers, env, ports, volumes; `type` for conditions; `containerPort` for
ports without a name) merge element by element, other lists are replaced; the `$patch`
(`replace`, `delete`), `$deleteFromPrimitiveList/...` and `$setElementOrder/...` directives are
honoured or dropped. Apply patches (server-side apply) are treated as merge patches.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import orjson

from .errors import ApiError, bad_request, unsupported_media

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (JSON, MERGE, STRATEGIC, APPLY)

_MERGE_KEYS = ("name", "type", "containerPort", "port", "mountPath", "devicePath", "ip", "key")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _MERGE_KEYS:
        if all(key in i for i in items):
            return key
    return None


def _strategic_list(target: list[Any] | None, patch: list[Any]) -> list[Any]:
    base = list(target) if isinstance(target, list) else []
    directives = [p for p in patch if isinstance(p, dict) and "$patch" in p]
    items = [p for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    if any(d.get("$patch") == "replace" for d in directives):
        return items
    key = _merge_key(items + [d for d in directives if len(d) > 1]) or _merge_key(base)
    if key is None or not all(
        isinstance(i, dict) and isinstance(i.get(key), (str, int, float, bool, type(None)))
        for i in base + items + directives
    ):
        return items
    out = list(base)
    index = {item.get(key): n for n, item in enumerate(out)}
    for d in directives:
        if d.get("$patch") == "delete" and d.get(key) in index:
            out[index[d[key]]] = None
    for item in items:
        if item.get(key) in index and out[index[item[key]]] is not None:
            out[index[item[key]]] = strategic_merge(out[index[item[key]]], item)
        else:
            index[item.get(key)] = len(out)
            out.append(strategic_merge({}, item))
    return [i for i in out if i is not None]


def strategic_merge(target: Any, patch: Any) -> Any:
    """The strategic-merge subset described in the module docstring."""
    if not isinstance(patch, dict):
        return patch
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _strategic_list(result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    return result


def parse_body(body: bytes, content_type: str) -> Any:
    """Decode a JSON (or, for apply patches, YAML) request body; 400 on garbage."""
    if content_type == APPLY:
        import yaml

        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise bad_request(f"invalid YAML: {exc}") from exc
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"invalid JSON in request body: {exc}") from exc


def apply_patch(target: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """Apply a PATCH body of the given content type to a copy of `target`."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in PATCH_TYPES:
        raise unsupported_media(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(PATCH_TYPES)}"
        )
    patch = parse_body(body, ctype)
    if ctype == JSON:
        if not isinstance(patch, list):
            raise bad_request("json patch must be a list of operations")
        try:
            result = jsonpatch.apply_patch(target, patch, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {exc}",
            ) from exc
        except (TypeError, KeyError, ValueError) as exc:
            raise bad_request(f"invalid json patch: {exc}") from exc
    else:
        if not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        try:
            result = (
                strategic_merge(target, patch) if ctype == STRATEGIC else merge_patch(target, patch)
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ApiError(422, "Invalid", f"cannot apply the patch: {exc}") from exc
    if not isinstance(result, dict):
        raise ApiError(422, "Invalid", "the patch did not produce an object")
    return result
