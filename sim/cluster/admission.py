"""Admission: the defaulting and validation the real API server does before storing an object.

Pods get their Pending status, default grace period and `spec.priority` from their
PriorityClass; Services get a cluster IP; Deployments get replicas/strategy defaults and must
have a selector matching their template; custom objects (Karpenter's and ours) are defaulted and
validated against their CRD schema (`validation.py`). Violations are 422 `Invalid` Statuses.
"""

from __future__ import annotations

import itertools
from typing import Any

from . import errors, structure
from .clock import timestamp
from .resources import ResourceType
from .selectors import LabelSelector
from .store import Obj, Store
from .validation import SchemaValidator


class Admission:
    """The admission chain bound to one store (for PriorityClass and Service IP look-ups)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ips = itertools.count(10)

    def __call__(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        # types first, so the handlers can trust them (custom kinds: metadata only here)
        causes = structure.check(rt.kind if rt.validator is None else structure.CUSTOM, obj)
        if causes:
            raise errors.invalid(rt.kind, _name(obj), causes, rt.group)
        handler = getattr(self, f"_admit_{rt.kind.lower()}", None)
        if handler is not None and rt.group in (
            "",
            "apps",
            "scheduling.k8s.io",
            "apiextensions.k8s.io",
        ):
            handler(rt, obj, old)
        if isinstance(rt.validator, SchemaValidator):
            rt.validator.default(obj)
        if rt.validator is not None:
            causes = rt.validator(obj)
            if causes:
                raise errors.invalid(rt.kind, _name(obj), causes, rt.group)

    def _admit_pod(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        if not spec.get("containers"):
            raise errors.invalid("Pod", _name(obj), [("spec.containers", "Required value")])
        if old is not None:
            return
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("priority", self._priority(spec.get("priorityClassName")))
        obj["status"] = {
            "phase": "Pending",
            "qosClass": "BestEffort",
            "conditions": [],
        }

    def _priority(self, class_name: str | None) -> int:
        pcs = self.store.registry.require("scheduling.k8s.io", "v1", "priorityclasses")
        if class_name:
            pc = self.store.try_get(pcs, "", class_name)
            if pc is None:
                raise errors.ApiError(
                    403,
                    "Forbidden",
                    f"pods is forbidden: no PriorityClass with name {class_name} was found",
                )
            return int(pc.get("value", 0))
        for pc in self.store.items(pcs):
            if pc.get("globalDefault"):
                return int(pc.get("value", 0))
        return 0

    def _admit_priorityclass(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        if not isinstance(obj.get("value"), int):
            raise errors.invalid(
                "PriorityClass", _name(obj), [("value", "Required value")], "scheduling.k8s.io"
            )

    def _admit_service(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if old is not None:
            spec["clusterIP"] = old.get("spec", {}).get("clusterIP")
        elif not spec.get("clusterIP"):
            n = next(self._ips)
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))

    def _admit_namespace(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        obj.setdefault("status", {})["phase"] = "Active"
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])

    def _admit_deployment(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        name = _name(obj)
        replicas = spec.setdefault("replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid(
                "Deployment", name, [("spec.replicas", "must be a non-negative integer")], "apps"
            )
        selector = spec.get("selector")
        if not isinstance(selector, dict) or not (
            selector.get("matchLabels") or selector.get("matchExpressions")
        ):
            raise errors.invalid("Deployment", name, [("spec.selector", "Required value")], "apps")
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not LabelSelector.from_object(selector).matches(labels):
            raise errors.invalid(
                "Deployment",
                name,
                [
                    (
                        "spec.template.metadata.labels",
                        "Invalid value: `selector` does not match template `labels`",
                    )
                ],
                "apps",
            )
        if not ((spec.get("template") or {}).get("spec") or {}).get("containers"):
            raise errors.invalid(
                "Deployment", name, [("spec.template.spec.containers", "Required value")], "apps"
            )
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
        )
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        template_spec = spec["template"]["spec"]
        template_spec.setdefault("terminationGracePeriodSeconds", 30)
        template_spec.setdefault("restartPolicy", "Always")

    def _admit_customresourcedefinition(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        causes: list[tuple[str, str]] = []
        if not spec.get("group"):
            causes.append(("spec.group", "Required value"))
        if not names.get("plural") or not names.get("kind"):
            causes.append(("spec.names", "plural and kind are required"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(("spec.scope", "Unsupported value: must be Namespaced or Cluster"))
        versions = spec.get("versions") or []
        if not versions:
            causes.append(("spec.versions", "Required value"))
        for n, v in enumerate(versions):
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(schema, dict):
                causes.append((f"spec.versions[{n}].schema.openAPIV3Schema", "Required value"))
        if sum(1 for v in versions if v.get("storage")) != 1 and versions:
            causes.append(("spec.versions", "must have exactly one version marked as storage"))
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if _name(obj) != expected and not causes:
            causes.append(
                ("metadata.name", f'must be spec.names.plural+"."+spec.group ({expected})')
            )
        if causes:
            raise errors.invalid(
                "CustomResourceDefinition", _name(obj), causes, "apiextensions.k8s.io"
            )
        if old is None:
            obj["status"] = {}


def _name(obj: Obj) -> str:
    meta: Any = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        return ""
    return str(meta.get("name") or meta.get("generateName") or "")


def now_condition(type_: str, status: str, reason: str = "", message: str = "") -> Obj:
    return {
        "type": type_,
        "status": status,
        "lastTransitionTime": timestamp(),
        "reason": reason or type_,
        "message": message,
    }
