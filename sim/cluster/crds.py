"""CustomResourceDefinitions: turn a stored CRD into served resource types, and back.

Any CRD posted to apiextensions.k8s.io/v1 (our InferenceScaler, Karpenter's NodePool and
NodeClaim) becomes one `ResourceType` per served version, with its `status`/`scale`
subresources, `additionalPrinterColumns` for `kubectl get`, and a schema validator. The CRD's
status gets the `NamesAccepted` and `Established` conditions at once, as on a real server.
Deleting the CRD stops serving it and deletes its objects.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import yaml

from .admission import now_condition
from .resources import PrinterColumn, Registry, ResourceType, ScaleSpec
from .store import Obj, Store, WatchEvent, clone
from .validation import SchemaValidator

log = logging.getLogger(__name__)


def resource_types(crd: Obj) -> list[ResourceType]:
    """The resource types a CRD object defines (served versions only)."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subs = version.get("subresources") or {}
        scale = None
        if "scale" in subs:
            s = subs["scale"] or {}
            scale = ScaleSpec(
                spec_replicas_path=s.get("specReplicasPath", ".spec.replicas"),
                status_replicas_path=s.get("statusReplicasPath", ".status.replicas"),
                label_selector_path=s.get("labelSelectorPath"),
            )
        columns = tuple(
            PrinterColumn(
                name=c["name"],
                type=c.get("type", "string"),
                json_path=c["jsonPath"],
                description=c.get("description", ""),
                priority=int(c.get("priority", 0)),
                format=c.get("format", ""),
            )
            for c in version.get("additionalPrinterColumns") or []
        )
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"}
        out.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                kind=names["kind"],
                namespaced=spec.get("scope") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                has_status="status" in subs,
                scale=scale,
                printer_columns=columns
                or (PrinterColumn("Age", "date", ".metadata.creationTimestamp"),),
                validator=SchemaValidator(schema),
            )
        )
    return out


class CrdController:
    """Keeps the registry in step with the stored CRDs."""

    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self.crd_rt = registry.require("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        self._served: dict[str, list[ResourceType]] = {}
        store.subscribe(self._on_event)

    def _on_event(self, event: WatchEvent) -> None:
        if event.rt.key != self.crd_rt.key:
            return
        name = event.obj["metadata"]["name"]
        if event.type == "DELETED":
            for rt in self._served.pop(name, []):
                self.registry.remove(rt.group, rt.plural)
                self.store.drop_type(rt)
            return
        try:
            types = resource_types(event.obj)
        except (KeyError, TypeError) as exc:
            log.warning("CRD %s is malformed: %s", name, exc)
            return
        for old in self._served.get(name, []):
            if old.version not in {t.version for t in types}:
                self.registry.remove(old.group, old.plural)
        for rt in types:
            self.registry.add(rt)
        self._served[name] = types
        self._establish(event.obj)

    def _establish(self, crd: Obj) -> None:
        status = crd.get("status") or {}
        if any(c.get("type") == "Established" for c in status.get("conditions") or []):
            return
        new = clone(crd)
        spec = new["spec"]
        new["status"] = {
            "acceptedNames": spec["names"],
            "conditions": [
                now_condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
                now_condition(
                    "Established",
                    "True",
                    "InitialNamesAccepted",
                    "the initial names have been accepted",
                ),
            ],
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
        }
        self.store.update(self.crd_rt, new)


def load_crd_files(directory: Path, *, pattern: str = "*.yaml") -> list[dict[str, Any]]:
    """Read every CRD manifest (`pattern`, default `*.yaml`) in a directory (parsed once per
    process)."""
    out = _load_crd_files(directory.resolve(), pattern)
    if not out:
        raise FileNotFoundError(f"no CustomResourceDefinition manifests in {directory}")
    return [clone(doc) for doc in out]


@functools.lru_cache(maxsize=8)
def _load_crd_files(directory: Path, pattern: str) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out = []
    for path in sorted(directory.glob(pattern)):
        for doc in yaml.load_all(path.read_text(), Loader=loader):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                out.append(doc)
    return out
