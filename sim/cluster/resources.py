"""The resource types the simulated API server serves, and their registry.

A `ResourceType` says where a resource lives (group, version, plural), what it is called (kind,
singular, short names), whether it is namespaced, which subresources it has (`status`, `scale`
with the JSON paths the real CRD or built-in uses) and how `kubectl get` prints it (printer
columns, see `tables.py`). Built-in types are listed here; CustomResourceDefinitions add theirs
at run time (`crds.py`). Discovery (`discovery.py`) and the router (`server.py`) read this registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Validator = Callable[[dict[str, Any]], list[tuple[str, str]]]
"""Returns (field path, message) for each schema violation; empty when the object is valid."""


@dataclass(frozen=True, slots=True)
class ScaleSpec:
    """Where a `scale` subresource reads and writes replicas (paths as in a CRD: `.spec.x`)."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = None


@dataclass(frozen=True, slots=True)
class PrinterColumn:
    """One `additionalPrinterColumns` entry: a JSONPath evaluated against the object."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One served resource (group/version/plural) and what the server needs to know about it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    scale: ScaleSpec | None = None
    printer_columns: tuple[PrinterColumn, ...] | None = None
    validator: Validator | None = field(default=None, compare=False)
    tracks_generation: bool = True
    key: str = field(init=False, compare=False)
    """A unique key: `plural.group/version` (`pods/v1` for the core group)."""

    def __post_init__(self) -> None:
        key = f"{self.plural}.{self.group}/{self.version}" if self.group else f"{self.plural}/v1"
        object.__setattr__(self, "key", key)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def verbs(self) -> list[str]:
        return [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]


def _core(plural: str, kind: str, **kw: Any) -> ResourceType:
    return ResourceType(
        group="", version="v1", plural=plural, singular=kind.lower(), kind=kind, **kw
    )


BUILTINS: tuple[ResourceType, ...] = (
    _core(
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        has_status=True,
        tracks_generation=False,
    ),
    _core(
        "pods",
        "Pod",
        namespaced=True,
        short_names=("po",),
        categories=("all",),
        has_status=True,
        tracks_generation=False,
    ),
    _core(
        "nodes",
        "Node",
        namespaced=False,
        short_names=("no",),
        has_status=True,
        tracks_generation=False,
    ),
    _core(
        "services",
        "Service",
        namespaced=True,
        short_names=("svc",),
        categories=("all",),
        has_status=True,
        tracks_generation=False,
    ),
    _core("events", "Event", namespaced=True, short_names=("ev",), tracks_generation=False),
    _core("configmaps", "ConfigMap", namespaced=True, short_names=("cm",), tracks_generation=False),
    _core("podtemplates", "PodTemplate", namespaced=True, tracks_generation=False),
    ResourceType(
        group="apps",
        version="v1",
        plural="deployments",
        singular="deployment",
        kind="Deployment",
        namespaced=True,
        short_names=("deploy",),
        categories=("all",),
        has_status=True,
        scale=ScaleSpec(label_selector_path=".status.selector"),
    ),
    ResourceType(
        group="apps",
        version="v1",
        plural="replicasets",
        singular="replicaset",
        kind="ReplicaSet",
        namespaced=True,
        short_names=("rs",),
        categories=("all",),
        has_status=True,
        scale=ScaleSpec(label_selector_path=".status.selector"),
    ),
    ResourceType(
        group="discovery.k8s.io",
        version="v1",
        plural="endpointslices",
        singular="endpointslice",
        kind="EndpointSlice",
        namespaced=True,
        tracks_generation=False,
    ),
    ResourceType(
        group="coordination.k8s.io",
        version="v1",
        plural="leases",
        singular="lease",
        kind="Lease",
        namespaced=True,
        tracks_generation=False,
    ),
    ResourceType(
        group="scheduling.k8s.io",
        version="v1",
        plural="priorityclasses",
        singular="priorityclass",
        kind="PriorityClass",
        namespaced=False,
        short_names=("pc",),
        tracks_generation=False,
    ),
    ResourceType(
        group="events.k8s.io",
        version="v1",
        plural="events",
        singular="event",
        kind="Event",
        namespaced=True,
        short_names=("ev",),
        tracks_generation=False,
    ),
    ResourceType(
        group="apiextensions.k8s.io",
        version="v1",
        plural="customresourcedefinitions",
        singular="customresourcedefinition",
        kind="CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        has_status=True,
    ),
)


class Registry:
    """All served resource types, looked up by (group, version, plural) or by kind."""

    def __init__(self, types: tuple[ResourceType, ...] = BUILTINS) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        self.version_counter = 0
        for rt in types:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._by_path[(rt.group, rt.version, rt.plural)] = rt
        self.version_counter += 1

    def remove(self, group: str, plural: str) -> None:
        for key in [k for k in self._by_path if k[0] == group and k[2] == plural]:
            del self._by_path[key]
        self.version_counter += 1

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def require(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.get(group, version, plural)
        if rt is None:
            raise KeyError(f"{plural}.{group}/{version} is not served")
        return rt

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._by_path.values()))

    def group_versions(self) -> dict[str, list[str]]:
        """group -> versions served (core group is "")."""
        out: dict[str, list[str]] = {}
        for group, version, _ in self._by_path:
            versions = out.setdefault(group, [])
            if version not in versions:
                versions.append(version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for (g, v, _), rt in self._by_path.items() if g == group and v == version]
