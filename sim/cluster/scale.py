"""The `scale` subresource (autoscaling/v1 Scale) of Deployments, ReplicaSets and CRDs.

A Scale reads `spec.replicas` and `status.replicas` (or the CRD's `specReplicasPath` /
`statusReplicasPath`) and the label selector; writing one sets only the spec replicas path,
with the Scale's resourceVersion as a precondition (409 when stale) and 422 for a negative or
non-integer count. Karpenter's NodePool scale maps to `.spec.replicas` / `.status.nodes`.
"""

from __future__ import annotations

from typing import Any

from . import errors
from .context import ApiContext, Target
from .resources import ResourceType
from .selectors import LabelSelector
from .store import Obj, clone


def _path_get(obj: Obj, path: str) -> Any:
    cur: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _path_set(obj: Obj, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def scale_of(rt: ResourceType, obj: Obj) -> Obj:
    """The autoscaling/v1 Scale view of an object with a scale subresource."""
    assert rt.scale is not None
    meta = obj["metadata"]
    status: dict[str, Any] = {"replicas": int(_path_get(obj, rt.scale.status_replicas_path) or 0)}
    if rt.scale.label_selector_path:
        selector = _path_get(obj, rt.scale.label_selector_path)
        if selector is None and rt.kind in ("Deployment", "ReplicaSet"):
            selector = str(LabelSelector.from_object(obj.get("spec", {}).get("selector")))
        if selector:
            status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": int(_path_get(obj, rt.scale.spec_replicas_path) or 0)},
        "status": status,
    }


def write_scale(ctx: ApiContext, t: Target, old: Obj, scale: Any, *, dry: bool) -> Obj:
    rt = t.rt
    assert rt.scale is not None
    assert t.name is not None
    if not isinstance(scale, dict):
        raise errors.bad_request("a Scale must be an object")
    for part in ("spec", "metadata", "status"):
        if scale.get(part) is not None and not isinstance(scale[part], dict):
            raise errors.invalid("Scale", t.name, [(part, "must be an object")], "autoscaling")
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.invalid(
            "Scale",
            t.name,
            [("spec.replicas", f"Invalid value: {replicas!r}: must be a non-negative integer")],
            "autoscaling",
        )
    new = clone(old)
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    if rv and rv != old["metadata"]["resourceVersion"]:
        raise errors.conflict(rt.plural, t.name, rt.group)
    _path_set(new, rt.scale.spec_replicas_path, replicas)
    ctx.admit(rt, new, old)
    stored = new if dry else ctx.store.update(rt, new)
    return scale_of(rt, stored)
